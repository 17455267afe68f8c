"""The one table from the lifecycle's refusals to problem+json (gateway/problems.py): every error type has
its status and title, and a handler that raises one answers with it."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from gpuproof.gateway import problems
from gpuproof.verifier import lifecycle


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_lifecycle_error_has_its_own_entry():
    missing = {c.__name__ for c in _subclasses(lifecycle.LifecycleError) if c not in problems.LIFECYCLE_PROBLEMS}
    assert not missing, f"no status for {sorted(missing)} in gateway.problems.LIFECYCLE_PROBLEMS"
    assert problems.lifecycle_problem(lifecycle.DeadlinePassed("commitment", 9.0, 8.0)) == (409, "Deadline passed")


def test_a_raised_lifecycle_error_is_its_problem():
    app = FastAPI()
    problems.install(app)

    @app.get("/late")
    def late() -> dict:
        raise lifecycle.DeadlinePassed("openings", 9.25, 8.0)

    @app.get("/judged")
    def judged() -> dict:
        raise lifecycle.AlreadyJudged("challenge x was judged on other openings")

    client = TestClient(app)
    r = client.get("/late")
    assert r.status_code == 409 and r.headers["content-type"] == problems.PROBLEM
    assert r.json() == {"type": "https://gpuproof.dev/problems/deadline-passed", "title": "Deadline passed",
                        "status": 409, "detail": "the openings came 9.250 s after issue; the deadline was 8.000 s",
                        "instance": "/late"}
    assert client.get("/judged").json()["title"] == "Already judged"
