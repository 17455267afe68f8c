"""Every call of the gateway's API, written once for both clients (docs/api.md).

A call is a generator method of `Calls` marked `@call`: it yields the request(s) it needs (`Request`) and
receives each answer's JSON body (or, for a `raw` request, the `httpx.Response`), then returns its result.
It never sends anything itself: `GatewayClient` drives it with blocking I/O and `AsyncGatewayClient` with
`await` (gpuproof.client.http), so each call, and each multi-request check of the log, exists once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from gpuproof.client.signing import (
    device_list,
    registration_body,
    signed_headers,
    signed_upload_headers,
    validator_headers,
)
from gpuproof.kernels.errors import GpuproofError
from gpuproof.verifier import evidence, logproofs, signatures, wire
from gpuproof.verifier.logproofs import LogVerificationError, TreeHead
from pydantic import BaseModel, ValidationError

T = TypeVar("T")
Flow = Generator["Request", Any, T]


class GatewayError(GpuproofError):
    """The gateway answered with an error; `status` and `problem` (RFC 9457) say why."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", "error"))
        self.detail = str(problem.get("detail", ""))
        self.retry_after = problem.get("retry_after")
        super().__init__(f"gateway answered {status} {self.title}: {self.detail}")


class GatewayUnreachable(GatewayError):
    """No answer at all: connection refused, DNS, timeout (`timed_out`: the client waited its timeout)."""

    def __init__(self, base_url: str, reason: str, timed_out: bool = False) -> None:
        super().__init__(0, {"title": "Unreachable", "detail": f"{base_url}: {reason}"})
        self.args = (f"gateway unreachable: {base_url}: {reason}",)
        self.timed_out = timed_out

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Poll:
    """One answer to a provider's poll: a challenge (None when nothing is due), the round-trip probe to echo,
    and when nothing is due, how long to wait before polling again and in how many seconds the device's next
    challenge is due (None from a gateway that does not say)."""

    challenge: wire.ChallengeOut | None
    probe: str | None
    retry_after_s: float | None = None
    mean_interval_s: float | None = None  # the gateway's mean gap between rounds: policy, never the next time

    @classmethod
    def parse(cls, response: httpx.Response, challenge: wire.ChallengeOut | None) -> Poll:
        if response.status_code != 204:
            return cls(challenge, response.headers.get("X-Gpuproof-Rtt-Probe"))
        mean = response.headers.get("X-Gpuproof-Challenge-Mean-Interval")
        return cls(None, response.headers.get("X-Gpuproof-Rtt-Probe"),
                   float(response.headers.get("Retry-After", 0)), float(mean) if mean is not None else None)


@dataclass(frozen=True)
class Request:
    """One HTTP request a call needs, and how to authenticate it."""

    method: str
    path: str
    body: bytes | None = None
    signed: bool = False
    api_key: bool = False
    content_type: str = "application/json"
    timeout_s: float | None = None  # this request's own timeout (a long poll); None: the client's
    validator_key: Any = None  # an Ed25519 private key: the request is signed as that validator
    upload: bool = False  # signed from the headers (signed_upload_headers): a checkpoint state
    raw: bool = False  # the call receives the httpx.Response, not its JSON body
    headers: dict[str, str] | None = None  # further headers (an Idempotency-Key)
    model: type[BaseModel] | None = None  # the answer's type (verifier/wire.py); None: the parsed JSON


def result(response: httpx.Response, model: type[BaseModel] | None = None) -> Any:
    """The JSON body of a successful answer (None for 204), parsed into `model` when one is given; a
    `GatewayError` for any other, or for an answer that is not what `model` says (502: the gateway broke
    its own contract)."""
    if response.status_code == 204:
        return None
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:200]}
        if "Retry-After" in response.headers:
            problem = dict(problem, retry_after=response.headers["Retry-After"])
        raise GatewayError(response.status_code, problem)
    if model is None:
        return response.json()
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise GatewayError(502, {"title": "Unexpected answer",
                                 "detail": f"{response.request.url.path}: not a {model.__name__}: {exc}"}) from None


class call:  # noqa: N801 (used as a decorator)
    """Marks a generator method of `Calls` as a call: looked up on a client, it runs the generator with that
    client's `_drive` (a value from `GatewayClient`, an awaitable from `AsyncGatewayClient`)."""

    def __init__(self, flow: Callable[..., Flow[Any]]) -> None:
        self.flow = flow
        functools.update_wrapper(self, flow)  # type: ignore[arg-type]

    def __get__(self, client: Any, owner: type | None = None) -> Any:
        if client is None:
            return self
        flow = self.flow

        @functools.wraps(flow)
        def bound(*args: Any, **kwargs: Any) -> Any:
            return client._drive(flow(client, *args, **kwargs))
        return bound


def _path(path: str, params: dict[str, Any] | None = None) -> str:
    clean = {k: v for k, v in (params or {}).items() if v is not None}
    return f"{path}?{urlencode(clean)}" if clean else path


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


class Calls:
    """The table of calls, shared by both clients. `key` (an Ed25519 key) makes a client a provider;
    `api_key` a marketplace; `pinned_log_key` pins the log's signing key."""

    def __init__(self, base_url: str, api_key: str | None = None, *, key=None, provider_id: str | None = None,  # noqa: ANN001
                 pinned_log_key: bytes | None = None, audience: str | None = None,
                 identity_check: Callable[[str, wire.IdentityOut], None] | None = None) -> None:
        """`audience`: the gateway's, for request signatures; None: asked of the gateway (GET /v1/identity)
        before the first signed request, and then held to `pinned_log_key` (the key must be the pinned one)
        and to `identity_check(base_url, identity)`, which raises to refuse it (the command line's
        `known_gateways`: a gateway that names itself as another the client knows at another address)."""
        self.base_url = base_url.rstrip("/")
        self.audience = audience
        self.identity_check = identity_check
        self.api_key = api_key
        self.key = key
        self.provider_id = provider_id or (signatures.provider_id(signatures.public_key_bytes(key)) if key else None)
        self.pinned_log_key = pinned_log_key

    def _drive(self, flow: Flow[Any]) -> Any:  # pragma: no cover - each client defines it
        raise NotImplementedError

    def _headers(self, req: Request) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if req.body is not None:
            headers["Content-Type"] = req.content_type
        if req.signed:
            if self.key is None or self.provider_id is None:
                raise GpuproofError("this call must be signed: give the client the provider's key")
            if req.upload:
                headers.update(signed_upload_headers(self.key, self.provider_id, req.method, req.path,
                                                     req.body or b"", audience=self._audience()))
            else:
                headers.update(signed_headers(self.key, self.provider_id, req.method, req.path, req.body or b"",
                                              audience=self._audience(), content_type=req.content_type))
        if req.api_key:
            if not self.api_key:
                raise GpuproofError("this call needs a marketplace API key (api_key=...)")
            headers["Authorization"] = f"Bearer {self.api_key}"
        if req.validator_key is not None:
            headers.update(validator_headers(req.validator_key, req.method, req.path, audience=self._audience()))
        if req.headers:
            headers.update(req.headers)
        return headers

    def accept_identity(self, identity: wire.IdentityOut) -> None:
        """Take the gateway's audience from its answer to GET /v1/identity, once it passes the checks above:
        a gateway could name itself as another one to collect requests signed for that one and replay them
        there, so what it says is held to what this client knew of it before."""
        if self.pinned_log_key is not None and identity.public_key != self.pinned_log_key.hex():
            raise GpuproofError(f"the gateway at {self.base_url} presents the key {identity.public_key[:16]}..., not "
                                f"the log key pinned for it ({self.pinned_log_key.hex()[:16]}...): no request is "
                                "signed for it")
        if self.identity_check is not None:
            self.identity_check(self.base_url, identity)
        self.audience = identity.audience

    def _audience(self) -> str:
        if self.audience is None:
            raise GpuproofError("the gateway's audience is not known yet (the client asks GET /v1/identity first)")
        return self.audience

    @staticmethod
    def needs_audience(req: Request) -> bool:
        return req.signed or req.validator_key is not None

    # providers and trust --------------------------------------------------------------------------
    @call
    def providers(self, model: str | None = None, min_lower_bound: float | None = None, limit: int = 50,
                  offset: int = 0, cursor: str | None = None) -> Flow[wire.ProviderPage]:
        """One page of providers: the first (or `offset` rows in, at most 10,000), or the one after `cursor`
        (a page's `next_cursor`)."""
        return (yield Request("GET", _path("/v1/providers", {"model": model, "min_lower_bound": min_lower_bound,
                                                              "limit": limit, "offset": offset or None,
                                                              "cursor": cursor}),
                              model=wire.ProviderPage))

    @call
    def all_providers(self, model: str | None = None, min_lower_bound: float | None = None,
                      page: int = 200) -> Flow[list[wire.ProviderOut]]:
        """Every provider the filters list, page by page along the cursors (each page costs the gateway the
        same however deep it is)."""
        items: list[wire.ProviderOut] = []
        cursor = None
        while True:
            found = yield from Calls.providers.flow(self, model, min_lower_bound, page, 0, cursor)
            items += found.items
            if found.next_cursor is None:
                return items
            cursor = found.next_cursor

    @call
    def provider(self, provider_id: str) -> Flow[wire.ProviderOut]:
        return (yield Request("GET", f"/v1/providers/{provider_id}", model=wire.ProviderOut))

    @call
    def register(self, name: str, devices: list[dict]) -> Flow[wire.ProviderOut]:
        if self.key is None:
            raise GpuproofError("registering needs the provider's key")
        return (yield Request("POST", "/v1/providers", registration_body(self.key, name, devices), True,
                              model=wire.ProviderOut))

    @call
    def update_registration(self, name: str, devices: list[dict]) -> Flow[wire.ProviderOut]:
        """Replace this provider's name and devices (a request signed by its key); the updated provider."""
        body = {"name": name, "devices": device_list(devices)}
        return (yield Request("PUT", f"/v1/providers/{self.provider_id}", _body(body), True, model=wire.ProviderOut))

    @call
    def trust(self, provider_id: str) -> Flow[wire.TrustOut]:
        return (yield Request("GET", f"/v1/providers/{provider_id}/trust", model=wire.TrustOut))

    @call
    def verdicts(self, provider_id: str, limit: int = 50, offset: int = 0,
                 cursor: str | None = None) -> Flow[wire.VerdictPage]:
        """One page of a provider's verdicts, newest first: the first (or `offset` rows in, at most 10,000),
        or the one after `cursor` (a page's `next_cursor`)."""
        return (yield Request("GET", _path(f"/v1/providers/{provider_id}/verdicts",
                                           {"limit": limit, "offset": offset or None, "cursor": cursor}),
                              model=wire.VerdictPage))

    @call
    def all_verdicts(self, provider_id: str, page: int = 200) -> Flow[list[wire.VerdictItem]]:
        """Every verdict of a provider, newest first, page by page along the cursors."""
        items: list[wire.VerdictItem] = []
        cursor = None
        while True:
            found = yield from Calls.verdicts.flow(self, provider_id, page, 0, cursor)
            items += found.items
            if found.next_cursor is None:
                return items
            cursor = found.next_cursor

    @call
    def transcript(self, challenge_id: str) -> Flow[dict]:
        return (yield Request("GET", f"/v1/challenges/{challenge_id}/transcript"))

    # the provider's side of a challenge -----------------------------------------------------------
    @call
    def poll(self, device: int = 0, wait_s: float = 0.0) -> Flow[Poll]:
        """Ask for the device's challenge: the open one, a new round's if the provider's is due, else (with
        `wait_s`, a long poll) wait up to that long for one; None when there is none."""
        body = {"device": device} | ({"wait_s": wait_s} if wait_s else {})
        response = yield Request("POST", f"/v1/providers/{self.provider_id}/challenges", _body(body), True,
                                 timeout_s=wait_s + 30.0 if wait_s else None, raw=True)
        return Poll.parse(response, result(response, wire.ChallengeOut))

    @call
    def next_challenge(self, device: int = 0) -> Flow[tuple[wire.ChallengeOut | None, str | None, float | None]]:
        """(challenge or None, RTT probe, Retry-After seconds when nothing is due): `poll` as a tuple."""
        p = yield from Calls.poll.flow(self, device)
        return p.challenge, p.probe, p.retry_after_s

    @call
    def echo_rtt(self, probe: str) -> Flow[wire.RttOut]:
        return (yield Request("POST", f"/v1/providers/{self.provider_id}/rtt", _body({"probe": probe}), True,
                              model=wire.RttOut))

    @call
    def commit(self, challenge_id: str, roots: list[bytes]) -> Flow[wire.OpeningRequestOut]:
        return (yield Request("POST", f"/v1/challenges/{challenge_id}/commitment",
                              _body({"roots": [r.hex() for r in roots]}), True, model=wire.OpeningRequestOut))

    @call
    def commit_walk(self, challenge_id: str, walk_root: bytes) -> Flow[wire.LaneRequestOut]:
        """Commit the walk root of spec v2's memory phase (at once: it is timed from the opening request's
        answer, which carried the nonce); the lanes to open."""
        return (yield Request("POST", f"/v1/challenges/{challenge_id}/walk", _body({"walk_root": walk_root.hex()}),
                              True, model=wire.LaneRequestOut))

    @call
    def open(self, challenge_id: str, openings: list[dict], lanes: list[dict] | None = None) -> Flow[wire.VerdictOut]:
        """Post the opened rows (and, for a challenge with a memory phase, the opened lanes in the order drawn:
        kernels.memory.LaneOpening.to_json); the verdict."""
        body = {"openings": openings} | ({"lanes": lanes} if lanes is not None else {})
        return (yield Request("POST", f"/v1/challenges/{challenge_id}/openings", _body(body),
                              True, model=wire.VerdictOut))

    # jobs and validators (a marketplace's API key) ------------------------------------------------
    @call
    def create_job(self, renter_ref: str, provider_id: str, price_ref: str, checkpoint_policy=None,  # noqa: ANN001
                   devices: list[int] | None = None, paid_class: str | None = None,
                   validators: list[str] | None = None, idempotency_key: str | None = None) -> Flow[wire.JobOut]:
        """A job bound to the provider's `devices` (positions; default all) and the `paid_class` (a profile;
        default the slowest class they claim), replayed by `validators` (public keys hex; default all the
        tenant's registered validators). Resent with the same `idempotency_key` (a fresh one per job the
        caller means to create), it returns the job the first call made instead of making another."""
        body = {"renter_ref": renter_ref, "provider_id": provider_id, "price_ref": price_ref,
                "checkpoint_policy": checkpoint_policy or {}}
        optional = {"devices": devices, "paid_class": paid_class, "validators": validators}
        body |= {name: value for name, value in optional.items() if value is not None}
        return (yield Request("POST", "/v1/jobs", _body(body), api_key=True, model=wire.JobOut,
                              headers={"Idempotency-Key": idempotency_key} if idempotency_key else None))

    @call
    def register_validator(self, public_key: str, name: str) -> Flow[wire.ValidatorOut]:
        """Register a validator (Ed25519 public key, hex) for this API key's tenant."""
        return (yield Request("POST", "/v1/validators", _body({"public_key": public_key, "name": name}),
                              api_key=True, model=wire.ValidatorOut))

    @call
    def validators(self) -> Flow[list[wire.ValidatorOut]]:
        return [wire.ValidatorOut.model_validate(v) for v in (yield Request("GET", "/v1/validators", api_key=True))]

    @call
    def delete_validator(self, public_key: str) -> Flow[None]:
        yield Request("DELETE", f"/v1/validators/{public_key}", api_key=True)

    @call
    def job(self, job_id: str) -> Flow[wire.JobOut]:
        return (yield Request("GET", f"/v1/jobs/{job_id}", api_key=True, model=wire.JobOut))

    @call
    def settle(self, job_id: str) -> Flow[wire.JobOut]:
        return (yield Request("POST", f"/v1/jobs/{job_id}/settlement", api_key=True, model=wire.JobOut))

    # training proofs: the provider's side (docs/protocol.md, "Training proofs") --------------------
    @call
    def post_checkpoint(self, job_id: str, commitment: dict) -> Flow[dict]:
        """One commitment (CheckpointCommitment.to_json()); the gateway's stored copy and arrival time."""
        return (yield Request("POST", f"/v1/jobs/{job_id}/checkpoints", _body(commitment), True))

    @call
    def close_run(self, job_id: str) -> Flow[dict]:
        """End the run: the response lists the drawn audits to answer."""
        return (yield Request("POST", f"/v1/jobs/{job_id}/checkpoints/close", b"", True))

    @call
    def training(self, job_id: str) -> Flow[dict]:
        return (yield Request("GET", f"/v1/jobs/{job_id}/training"))

    @call
    def upload_state(self, audit_id: str, data: bytes) -> Flow[dict]:
        return (yield Request("PUT", f"/v1/audits/{audit_id}/state", data, True,
                              content_type="application/octet-stream", upload=True))

    @call
    def open_segment(self, audit_id: str, batches: list[list[int]], openings: list[dict]) -> Flow[dict]:
        return (yield Request("POST", f"/v1/audits/{audit_id}/openings",
                              _body({"batches": batches, "openings": openings}), True))

    # training proofs: the validator's side (API key with scope `replay`; `validator_key` signs the read as a
    # validator the job names, needed unless the key is the job's tenant's)
    @call
    def replay_materials(self, audit_id: str, validator_key=None) -> Flow[dict]:  # noqa: ANN001
        return (yield Request("GET", f"/v1/audits/{audit_id}/materials", api_key=True, validator_key=validator_key))

    @call
    def replay_state(self, audit_id: str, validator_key=None) -> Flow[bytes]:  # noqa: ANN001
        response = yield Request("GET", f"/v1/audits/{audit_id}/state", api_key=True, validator_key=validator_key,
                                 raw=True)
        if response.status_code >= 400:
            result(response)
        return response.content

    @call
    def post_replay_result(self, audit_id: str, replay: dict) -> Flow[dict]:
        return (yield Request("POST", f"/v1/audits/{audit_id}/result", _body(replay), api_key=True))

    # the log, verified locally (gpuproof.verifier.logproofs) --------------------------------------
    @call
    def tree_head(self) -> Flow[TreeHead]:
        return TreeHead.parse((yield Request("GET", "/v1/log/head")), self.pinned_log_key)

    @call
    def checkpoint(self) -> Flow[TreeHead]:
        """The log's signed checkpoint (GET /v1/log/checkpoint, C2SP tlog-checkpoint text), verified with the
        pinned log key, or with the key the JSON head names when none is pinned (trust on first use)."""
        key = self.pinned_log_key or (yield from Calls.tree_head.flow(self)).public_key
        response = yield Request("GET", "/v1/log/checkpoint", raw=True)
        if response.status_code >= 400:
            result(response)
        return TreeHead.from_checkpoint(response.text, key)

    @call
    def log_entries(self, start: int = 0, end: int | None = None) -> Flow[wire.LogEntriesOut]:
        return (yield Request("GET", _path("/v1/log/entries", {"start": start, "end": end}), model=wire.LogEntriesOut))

    @call
    def inclusion_proof(self, index: int, size: int) -> Flow[wire.InclusionProofOut]:
        return (yield Request("GET", _path("/v1/log/inclusion", {"index": index, "size": size}),
                              model=wire.InclusionProofOut))

    @call
    def consistency_proof(self, old: int, new: int) -> Flow[wire.ConsistencyProofOut]:
        return (yield Request("GET", _path("/v1/log/consistency", {"old": old, "new": new}),
                              model=wire.ConsistencyProofOut))

    @call
    def challenge_log(self, challenge_id: str) -> Flow[wire.ChallengeLogOut]:
        """The log's entries about one challenge, as served (unchecked)."""
        return (yield Request("GET", f"/v1/log/challenges/{challenge_id}", model=wire.ChallengeLogOut))

    @call
    def verified_entry(self, index: int, head: TreeHead | None = None) -> Flow[dict]:
        """Entry `index`, checked to be in the signed tree (the current head unless one is given)."""
        head = head or (yield from Calls.tree_head.flow(self))
        entries = (yield from Calls.log_entries.flow(self, index, index + 1)).entries
        if not entries or entries[0].index != index:
            raise LogVerificationError(f"the gateway did not return entry {index}")
        proof = yield from Calls.inclusion_proof.flow(self, index, head.size)
        logproofs.verify_inclusion(head, index, entries[0].entry, proof.proof)
        return json.loads(entries[0].entry)

    @call
    def check_extends(self, old: TreeHead) -> Flow[TreeHead]:
        """The current head, checked to extend `old` (a consistency proof): the history was not rewritten."""
        new = yield from Calls.tree_head.flow(self)
        yield from Calls.verify_extends.flow(self, old, new)
        return new

    @call
    def verify_extends(self, old: TreeHead, new: TreeHead) -> Flow[None]:
        """Check that head `new` extends head `old` (same origin, a consistency proof), or raise
        LogVerificationError: the gateway rewrote its history or shows different logs to different readers."""
        if old.origin is not None and new.origin != old.origin:
            raise LogVerificationError(f"the log's origin changed from {old.origin!r} to {new.origin!r}")
        if new.size < old.size:
            raise LogVerificationError(f"the log shrank from {old.size} to {new.size} entries")
        if old.size:
            proof = yield from Calls.consistency_proof.flow(self, old.size, new.size)
            logproofs.verify_consistency(old, new, proof.proof)

    @call
    def transcript_log_differences(self, doc: dict[str, Any]) -> Flow[tuple[TreeHead, dict[str, int], list[str]]]:
        """Check a transcript against the log: each of its challenge's entries is in the tree a signed head
        signs (inclusion proof), and their bodies and order bind the transcript
        (`gpuproof.verifier.evidence.challenge_differences`). Returns the head, the entries by kind and every
        difference (empty: the log binds this transcript). Precondition: `doc` parsed as a transcript."""
        served = (yield from Calls.challenge_log.flow(self, doc["challenge"]["challenge_id"])).entries
        head = yield from Calls.tree_head.flow(self)  # after the entries: a growing log holds them all
        diffs, checked = [], []
        for e in served:
            try:
                proof = yield from Calls.inclusion_proof.flow(self, e.index, head.size)
                logproofs.verify_inclusion(head, e.index, e.entry, proof.proof)
            except (LogVerificationError, GatewayError) as exc:
                diffs.append(str(exc))
                continue
            checked.append((e.index, e.entry))
        diffs += evidence.challenge_differences(doc, checked)
        return head, {e.kind: e.index for e in served}, diffs

    @call
    def audit_log(self, head: TreeHead, audit: evidence.LogAudit | None = None) -> Flow[evidence.LogAudit]:
        """Every entry up to `head.size` read and checked (`gpuproof.verifier.evidence.LogAudit`), 200 at a time,
        continuing `audit` where it stopped; then the recomputed root compared with the head's."""
        audit = audit or evidence.LogAudit()
        while audit.size < head.size:
            page = (yield from Calls.log_entries.flow(self, audit.size, min(head.size, audit.size + 200))).entries
            if not page:
                break
            before = audit.size
            for e in page:
                audit.add(e.index, e.kind, e.entry, e.leaf_hash)
            if audit.size == before:  # an entry out of place: it is a difference already; stop here
                break
        audit.check_root(head.size, head.root)
        return audit
