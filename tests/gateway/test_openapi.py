"""/openapi.json documents every 2xx body (issue 15, "Each wire form defined once"): each JSON success answer
has a schema, and real answers match theirs with no field the schema does not name."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from gpuproof.gateway import admin

from tests.gateway.test_api import Agent

JSON = "application/json"


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                yield path, method, op


def _says_nothing(schema: dict | None) -> bool:
    """No schema, `{}`, or an object of any fields (what a handler annotated `-> dict` gets)."""
    rest = {k: v for k, v in (schema or {}).items() if k not in ("title", "description")}
    return not rest or rest in ({"type": "object"}, {"type": "object", "additionalProperties": True})


def test_every_2xx_json_answer_has_a_schema(gateway):
    spec = gateway.client.get("/openapi.json").json()
    missing, successes = [], 0
    for path, method, op in _operations(spec):
        for code, answer in op.get("responses", {}).items():
            if not code.startswith("2"):
                continue
            successes += 1
            content = answer.get("content")
            if code == "204":
                assert not content, f"{method.upper()} {path}: a 204 has no body, yet declares {content}"
                continue
            if not content:
                missing.append(f"{method.upper()} {path} {code} (no media type)")
            elif JSON in content:
                schema = content[JSON].get("schema")
                if _says_nothing(schema):
                    missing.append(f"{method.upper()} {path} {code}")
    assert successes >= 30
    assert not missing, f"{len(missing)} 2xx answers without a schema: {missing}"


def _strict(spec: dict) -> dict:
    """The spec's component schemas with every declared object closed: a field the schema does not name fails."""
    components = copy.deepcopy(spec["components"])
    for schema in components["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return components


def _check(spec: dict, path: str, method: str, code: int, body) -> None:  # noqa: ANN001
    schema = spec["paths"][path][method]["responses"][str(code)]["content"][JSON]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": _strict(spec)}).validate(body)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_real_answers_match_their_schemas(gateway):
    client = gateway.client
    spec = client.get("/openapi.json").json()
    agent = Agent(gateway)
    c = agent.next().json()
    _check(spec, "/v1/providers/{provider_id}/challenges", "post", 201, c)
    params, roots = agent.prove(c)
    request = agent.post(f"/v1/challenges/{c['challenge_id']}/commitment", {"roots": [r.hex() for r in roots]})
    _check(spec, "/v1/challenges/{challenge_id}/commitment", "post", 200, request.json())
    verdict = agent.post(f"/v1/challenges/{c['challenge_id']}/openings",
                         agent.openings(params, roots, request.json()["pairs"]))
    _check(spec, "/v1/challenges/{challenge_id}/openings", "post", 200, verdict.json())
    _check(spec, "/v1/providers/{provider_id}/trust", "get", 200, client.get(f"/v1/providers/{agent.id}/trust").json())
    _check(spec, "/v1/providers/{provider_id}/verdicts", "get", 200,
           client.get(f"/v1/providers/{agent.id}/verdicts").json())
    _check(spec, "/v1/providers/{provider_id}", "get", 200, client.get(f"/v1/providers/{agent.id}").json())
    head = client.get("/v1/log/head").json()
    _check(spec, "/v1/log/head", "get", 200, head)
    _check(spec, "/v1/log/entries", "get", 200, client.get("/v1/log/entries").json())
    _check(spec, "/v1/log/inclusion", "get", 200,
           client.get("/v1/log/inclusion", params={"index": 0, "size": head["size"]}).json())
    _check(spec, "/v1/log/consistency", "get", 200,
           client.get("/v1/log/consistency", params={"old": 1, "new": head["size"]}).json())
    _check(spec, "/v1/log/challenges/{challenge_id}", "get", 200,
           client.get(f"/v1/log/challenges/{c['challenge_id']}").json())
    _check(spec, "/healthz", "get", 200, client.get("/healthz").json())
    key = admin.create_api_key(gateway.app.state.gp.db, "market", ["jobs", "settle"])
    auth = {"Authorization": f"Bearer {key}"}
    job = client.post("/v1/jobs", json={"renter_ref": "r", "provider_id": agent.id, "price_ref": "p"}, headers=auth)
    assert job.status_code == 201, job.text
    _check(spec, "/v1/jobs", "post", 201, job.json())
    settled = client.post(f"/v1/jobs/{job.json()['id']}/settlement", headers=auth)
    _check(spec, "/v1/jobs/{job_id}/settlement", "post", 200, settled.json())


def test_docs_openapi_json_is_the_apps_document(tmp_path):
    """docs/openapi.json is published for clients in other languages (issue 19); it must be what the gateway
    serves. After a change to a route or model: `gpuproof gateway openapi --out docs/openapi.json`."""
    from pathlib import Path

    from gpuproof.gateway.app import openapi_document

    published = (Path(__file__).parents[2] / "docs" / "openapi.json").read_text()
    generated = openapi_document(tmp_path)
    assert published == generated, "docs/openapi.json is stale: `gpuproof gateway openapi --out docs/openapi.json`"
    spec = json.loads(published)
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids)) and {"register_provider", "post_openings", "settle_job"} <= set(ids)
