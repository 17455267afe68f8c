"""Client SDK for the gateway (httpx, sync and async), and the signing helpers agents use.

`GatewayClient` and `AsyncGatewayClient` share every request builder and response parser; they differ
only in how they send. Answers come back as the server's response models (verifier/wire.py) where a call
names one; the training and replay calls and the transcript return the parsed JSON. Errors come back
as `GatewayError` carrying the problem+json detail; an unreachable gateway is `GatewayUnreachable`. What
can be checked locally is: the signed tree head's signature (`tree_head`), inclusion proofs
(`verify_inclusion`) and consistency proofs (`verify_consistency`), all raising `LogVerificationError`
with the reason.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from gpuproof.kernels import merkle
from gpuproof.kernels.errors import GpuproofError, ProofError
from gpuproof.verifier import evidence, signatures, wire
from pydantic import BaseModel, ValidationError


def signed_headers(key, provider_id: str, method: str, path: str, body: bytes,  # noqa: ANN001
                   timestamp: int | None = None, nonce: str | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Headers that authenticate one provider request (path includes the query string)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    signature = signatures.sign(key, signatures.request_message(method, path, ts, nonce, body))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "Content-Type": content_type}


def signed_upload_headers(key, provider_id: str, method: str, path: str, body: bytes,  # noqa: ANN001
                          timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """Headers that authenticate an upload before its body is read: the signature covers the body's
    SHA-256 (X-Gpuproof-Content-Sha256) and length (Content-Length; httpx sets it from the body)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    digest = hashlib.sha256(body).hexdigest()
    signature = signatures.sign(key, signatures.upload_message(method, path, ts, nonce, digest, len(body)))
    return {"X-Gpuproof-Provider": provider_id, "X-Gpuproof-Timestamp": str(ts), "X-Gpuproof-Nonce": nonce,
            "X-Gpuproof-Signature": signature.hex(), "X-Gpuproof-Content-Sha256": digest,
            "Content-Type": "application/octet-stream"}


def validator_headers(key, method: str, path: str, timestamp: int | None = None) -> dict[str, str]:  # noqa: ANN001
    """Headers that sign a bodiless request (a replay read) as the validator `key` (gateway/tenancy.py)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = secrets.token_urlsafe(18)
    signature = signatures.sign(key, signatures.request_message(method, path, ts, nonce, b""))
    return {"X-Gpuproof-Validator": signatures.public_key_bytes(key).hex(), "X-Gpuproof-Timestamp": str(ts),
            "X-Gpuproof-Nonce": nonce, "X-Gpuproof-Signature": signature.hex()}


def registration(key, name: str, devices: list[dict]) -> dict:  # noqa: ANN001
    """The body of POST /v1/providers, signed by `key` (proof of possession)."""
    devices = [{"model": str(d["model"]), "count": int(d.get("count", 1)), "vram_gib": float(d["vram_gib"])}
               for d in devices]  # the exact form the gateway re-serialises and checks
    public_key = signatures.public_key_bytes(key)
    devices_json = json.dumps(devices, sort_keys=True, separators=(",", ":"))
    signature = signatures.sign(key, signatures.registration_message(public_key, name, devices_json))
    return {"public_key": public_key.hex(), "name": name, "devices": devices, "signature": signature.hex()}


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
    """No answer at all: connection refused, DNS, timeout."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(0, {"title": "Unreachable", "detail": f"{base_url}: {reason}"})
        self.args = (f"gateway unreachable: {base_url}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class LogVerificationError(GpuproofError):
    """A log response does not check out locally: the gateway's history cannot be trusted."""


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes
    timestamp: float
    signature: bytes
    public_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex(), "timestamp": self.timestamp,
                "signature": self.signature.hex(), "public_key": self.public_key.hex()}

    @classmethod
    def parse(cls, data: dict[str, Any], pinned_key: bytes | None = None) -> TreeHead:
        """A tree head from JSON, its signature checked (and its key, when one is pinned)."""
        try:
            head = cls(int(data["size"]), bytes.fromhex(data["root"]), float(data["timestamp"]),
                       bytes.fromhex(data["signature"]), bytes.fromhex(data["public_key"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LogVerificationError(f"malformed tree head: {exc}") from None
        if pinned_key is not None and head.public_key != pinned_key:
            raise LogVerificationError("tree head is signed by another key than the one pinned for this gateway")
        try:
            signatures.verify(head.public_key, signatures.tree_head_message(head.size, head.root, head.timestamp),
                              head.signature)
        except signatures.SignatureError as exc:
            raise LogVerificationError(f"tree head signature: {exc}") from None
        return head


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


# Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive timeout closes them from the
# other end: reusing a connection the server is closing is a reset a client would otherwise see.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: bytes | None = None
    signed: bool = False
    api_key: bool = False
    content_type: str = "application/json"
    timeout_s: float | None = None  # this call's own timeout (a long poll); None: the client's
    validator_key: Any = None  # an Ed25519 private key: the request is signed as that validator
    upload: bool = False  # signed from the headers (signed_upload_headers): a checkpoint state
    model: type[BaseModel] | None = None  # the answer's type (verifier/wire.py); None: the parsed JSON


def _timeout(call: _Call) -> dict[str, Any]:
    return {} if call.timeout_s is None else {"timeout": call.timeout_s}


class _Base:
    def __init__(self, base_url: str, api_key: str | None = None, *, key=None, provider_id: str | None = None,  # noqa: ANN001
                 pinned_log_key: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.key = key
        self.provider_id = provider_id or (signatures.provider_id(signatures.public_key_bytes(key)) if key else None)
        self.pinned_log_key = pinned_log_key

    # request building -----------------------------------------------------------------------------
    def _headers(self, call: _Call) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if call.body is not None:
            headers["Content-Type"] = call.content_type
        if call.signed:
            if self.key is None or self.provider_id is None:
                raise GpuproofError("this call must be signed: give the client the provider's key")
            if call.upload:
                headers.update(signed_upload_headers(self.key, self.provider_id, call.method, call.path,
                                                     call.body or b""))
            else:
                headers.update(signed_headers(self.key, self.provider_id, call.method, call.path, call.body or b"",
                                              content_type=call.content_type))
        if call.api_key:
            if not self.api_key:
                raise GpuproofError("this call needs a marketplace API key (api_key=...)")
            headers["Authorization"] = f"Bearer {self.api_key}"
        if call.validator_key is not None:
            headers.update(validator_headers(call.validator_key, call.method, call.path))
        return headers

    @staticmethod
    def _path(path: str, params: dict[str, Any] | None = None) -> str:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        return f"{path}?{urlencode(clean)}" if clean else path

    @staticmethod
    def _body(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    @staticmethod
    def _result(response: httpx.Response, model: type[BaseModel] | None = None) -> Any:
        """The answer's JSON, parsed into `model` when one is given (None for a 204); GatewayError for an
        error, or for an answer that is not what `model` says (502: the gateway broke its own contract)."""
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

    # calls ----------------------------------------------------------------------------------------
    def _c_providers(self, model=None, min_lower_bound=None, limit=50, offset=0) -> _Call:  # noqa: ANN001
        return _Call("GET", self._path("/v1/providers", {"model": model, "min_lower_bound": min_lower_bound,
                                                          "limit": limit, "offset": offset}),
                     model=wire.ProviderPage)

    def _c_register(self, name: str, devices: list[dict]) -> _Call:
        if self.key is None:
            raise GpuproofError("registering needs the provider's key")
        return _Call("POST", "/v1/providers", self._body(registration(self.key, name, devices)),
                     model=wire.ProviderOut)

    def _c_update_registration(self, name: str, devices: list[dict]) -> _Call:
        body = {"name": name, "devices": [{"model": str(d["model"]), "count": int(d.get("count", 1)),
                                           "vram_gib": float(d["vram_gib"])} for d in devices]}
        return _Call("PUT", f"/v1/providers/{self.provider_id}", self._body(body), True, model=wire.ProviderOut)

    def _c_next(self, device: int, wait_s: float = 0.0) -> _Call:
        body = {"device": device} | ({"wait_s": wait_s} if wait_s else {})
        return _Call("POST", f"/v1/providers/{self.provider_id}/challenges", self._body(body), True,
                     timeout_s=wait_s + 30.0 if wait_s else None, model=wire.ChallengeOut)

    def _c_rtt(self, probe: str) -> _Call:
        return _Call("POST", f"/v1/providers/{self.provider_id}/rtt", self._body({"probe": probe}), True,
                     model=wire.RttOut)

    def _c_commit(self, challenge_id: str, roots: list[bytes]) -> _Call:
        return _Call("POST", f"/v1/challenges/{challenge_id}/commitment",
                     self._body({"roots": [r.hex() for r in roots]}), True, model=wire.OpeningRequestOut)

    def _c_open(self, challenge_id: str, openings: list[dict]) -> _Call:
        return _Call("POST", f"/v1/challenges/{challenge_id}/openings", self._body({"openings": openings}), True,
                     model=wire.VerdictOut)

    def _c_create_job(self, renter_ref: str, provider_id: str, price_ref: str, checkpoint_policy=None,  # noqa: ANN001
                      devices: list[int] | None = None, paid_class: str | None = None,
                      validators: list[str] | None = None) -> _Call:
        body = {"renter_ref": renter_ref, "provider_id": provider_id, "price_ref": price_ref,
                "checkpoint_policy": checkpoint_policy or {}}
        if devices is not None:
            body["devices"] = devices
        if paid_class is not None:
            body["paid_class"] = paid_class
        if validators is not None:
            body["validators"] = validators
        return _Call("POST", "/v1/jobs", self._body(body), api_key=True, model=wire.JobOut)

    # training proofs (docs/protocol.md, "Training proofs")
    def _c_checkpoint(self, job_id: str, commitment: dict) -> _Call:
        return _Call("POST", f"/v1/jobs/{job_id}/checkpoints", self._body(commitment), True)

    def _c_close_run(self, job_id: str) -> _Call:
        return _Call("POST", f"/v1/jobs/{job_id}/checkpoints/close", b"", True)

    def _c_upload_state(self, audit_id: str, data: bytes) -> _Call:
        return _Call("PUT", f"/v1/audits/{audit_id}/state", data, True, content_type="application/octet-stream",
                     upload=True)

    def _c_open_segment(self, audit_id: str, batches: list[list[int]], openings: list[dict]) -> _Call:
        return _Call("POST", f"/v1/audits/{audit_id}/openings",
                     self._body({"batches": batches, "openings": openings}), True)

    def _c_replay_result(self, audit_id: str, result: dict) -> _Call:
        return _Call("POST", f"/v1/audits/{audit_id}/result", self._body(result), api_key=True)

    @staticmethod
    def verify_inclusion(head: TreeHead, index: int, entry: str, proof: wire.InclusionProofOut) -> None:
        """Check that `entry` (the canonical JSON text) is leaf `index` of the tree `head` signs."""
        try:
            merkle.verify_inclusion(index, head.size, merkle.leaf_hash(entry.encode()),
                                    [bytes.fromhex(h) for h in proof.proof], head.root)
        except (ProofError, KeyError, ValueError) as exc:
            raise LogVerificationError(f"entry {index} is not in the signed tree of {head.size}: {exc}") from None

    @staticmethod
    def verify_consistency(old: TreeHead, new: TreeHead, proof: wire.ConsistencyProofOut) -> None:
        """Check that the tree `new` signs extends the tree `old` signs (nothing was rewritten)."""
        try:
            merkle.verify_consistency(old.size, new.size, old.root, new.root,
                                      [bytes.fromhex(h) for h in proof.proof])
        except (ProofError, KeyError, ValueError) as exc:
            raise LogVerificationError(f"the log of {new.size} entries does not extend the one of {old.size} "
                                       f"entries seen before: {exc}") from None


class GatewayClient(_Base):
    """Synchronous client. `key` (an Ed25519 key) makes it a provider; `api_key` a marketplace."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, limits=_LIMITS)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        return self._result(self._send_raw(call), call.model)

    def _send_raw(self, call: _Call) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, content=call.body, headers=self._headers(call),
                                      **_timeout(call))
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from None

    # providers and trust
    def providers(self, **filters: Any) -> wire.ProviderPage:
        return self._send(self._c_providers(**filters))

    def provider(self, provider_id: str) -> wire.ProviderOut:
        return self._send(_Call("GET", f"/v1/providers/{provider_id}", model=wire.ProviderOut))

    def register(self, name: str, devices: list[dict]) -> wire.ProviderOut:
        return self._send(self._c_register(name, devices))

    def update_registration(self, name: str, devices: list[dict]) -> wire.ProviderOut:
        """Replace this provider's name and devices (a request signed by its key); the updated provider."""
        return self._send(self._c_update_registration(name, devices))

    def trust(self, provider_id: str) -> wire.TrustOut:
        return self._send(_Call("GET", f"/v1/providers/{provider_id}/trust", model=wire.TrustOut))

    def verdicts(self, provider_id: str, limit: int = 50, offset: int = 0) -> wire.VerdictPage:
        return self._send(_Call("GET", self._path(f"/v1/providers/{provider_id}/verdicts",
                                                  {"limit": limit, "offset": offset}), model=wire.VerdictPage))

    def transcript(self, challenge_id: str) -> dict:
        return self._send(_Call("GET", f"/v1/challenges/{challenge_id}/transcript"))

    # the provider's side of a challenge
    def poll(self, device: int = 0, wait_s: float = 0.0) -> Poll:
        """Ask for the device's challenge: the open one, a new round's if the provider's is due, else (with
        `wait_s`, a long poll) wait up to that long for one; None when there is none."""
        response = self._send_raw(self._c_next(device, wait_s))
        return Poll.parse(response, self._result(response, wire.ChallengeOut))

    def next_challenge(self, device: int = 0) -> tuple[wire.ChallengeOut | None, str | None, float | None]:
        """(challenge or None, RTT probe, Retry-After seconds when nothing is due): `poll` as a tuple."""
        p = self.poll(device)
        return p.challenge, p.probe, p.retry_after_s

    def echo_rtt(self, probe: str) -> wire.RttOut:
        return self._send(self._c_rtt(probe))

    def commit(self, challenge_id: str, roots: list[bytes]) -> wire.OpeningRequestOut:
        return self._send(self._c_commit(challenge_id, roots))

    def open(self, challenge_id: str, openings: list[dict]) -> wire.VerdictOut:
        return self._send(self._c_open(challenge_id, openings))

    # jobs
    def create_job(self, renter_ref: str, provider_id: str, price_ref: str, checkpoint_policy=None,  # noqa: ANN001
                   devices: list[int] | None = None, paid_class: str | None = None,
                   validators: list[str] | None = None) -> wire.JobOut:
        """A job bound to the provider's `devices` (positions; default all) and the `paid_class` (a profile;
        default the slowest class they claim), replayed by `validators` (public keys hex; default all the
        tenant's registered validators)."""
        return self._send(self._c_create_job(renter_ref, provider_id, price_ref, checkpoint_policy, devices,
                                             paid_class, validators))

    def register_validator(self, public_key: str, name: str) -> wire.ValidatorOut:
        """Register a validator (Ed25519 public key, hex) for this API key's tenant."""
        return self._send(_Call("POST", "/v1/validators", self._body({"public_key": public_key, "name": name}),
                                api_key=True, model=wire.ValidatorOut))

    def validators(self) -> list[wire.ValidatorOut]:
        return [wire.ValidatorOut.model_validate(v) for v in self._send(_Call("GET", "/v1/validators", api_key=True))]

    def delete_validator(self, public_key: str) -> None:
        self._send(_Call("DELETE", f"/v1/validators/{public_key}", api_key=True))

    def job(self, job_id: str) -> wire.JobOut:
        return self._send(_Call("GET", f"/v1/jobs/{job_id}", api_key=True, model=wire.JobOut))

    def settle(self, job_id: str) -> wire.JobOut:
        return self._send(_Call("POST", f"/v1/jobs/{job_id}/settlement", api_key=True, model=wire.JobOut))

    # the log, verified locally
    def tree_head(self) -> TreeHead:
        return TreeHead.parse(self._send(_Call("GET", "/v1/log/head")), self.pinned_log_key)

    # training proofs: the provider's side
    def post_checkpoint(self, job_id: str, commitment: dict) -> dict:
        """One commitment (CheckpointCommitment.to_json()); the gateway's stored copy and arrival time."""
        return self._send(self._c_checkpoint(job_id, commitment))

    def close_run(self, job_id: str) -> dict:
        """End the run: the response lists the drawn audits to answer."""
        return self._send(self._c_close_run(job_id))

    def training(self, job_id: str) -> dict:
        return self._send(_Call("GET", f"/v1/jobs/{job_id}/training"))

    def upload_state(self, audit_id: str, data: bytes) -> dict:
        return self._send(self._c_upload_state(audit_id, data))

    def open_segment(self, audit_id: str, batches: list[list[int]], openings: list[dict]) -> dict:
        return self._send(self._c_open_segment(audit_id, batches, openings))

    # training proofs: the validator's side (API key with scope `replay`)
    # (`validator_key`: sign the read as a validator the job names, needed unless the key is the job's tenant's)
    def replay_materials(self, audit_id: str, validator_key=None) -> dict:  # noqa: ANN001
        return self._send(_Call("GET", f"/v1/audits/{audit_id}/materials", api_key=True,
                                validator_key=validator_key))

    def replay_state(self, audit_id: str, validator_key=None) -> bytes:  # noqa: ANN001
        response = self._send_raw(_Call("GET", f"/v1/audits/{audit_id}/state", api_key=True,
                                        validator_key=validator_key))
        if response.status_code >= 400:
            self._result(response)
        return response.content

    def post_replay_result(self, audit_id: str, result: dict) -> dict:
        return self._send(self._c_replay_result(audit_id, result))

    def log_entries(self, start: int = 0, end: int | None = None) -> wire.LogEntriesOut:
        return self._send(_Call("GET", self._path("/v1/log/entries", {"start": start, "end": end}),
                                model=wire.LogEntriesOut))

    def inclusion_proof(self, index: int, size: int) -> wire.InclusionProofOut:
        return self._send(_Call("GET", self._path("/v1/log/inclusion", {"index": index, "size": size}),
                                model=wire.InclusionProofOut))

    def consistency_proof(self, old: int, new: int) -> wire.ConsistencyProofOut:
        return self._send(_Call("GET", self._path("/v1/log/consistency", {"old": old, "new": new}),
                                model=wire.ConsistencyProofOut))

    def verified_entry(self, index: int, head: TreeHead | None = None) -> dict:
        """Entry `index`, checked to be in the signed tree (the current head unless one is given)."""
        head = head or self.tree_head()
        entries = self.log_entries(index, index + 1).entries
        if not entries or entries[0].index != index:
            raise LogVerificationError(f"the gateway did not return entry {index}")
        self.verify_inclusion(head, index, entries[0].entry, self.inclusion_proof(index, head.size))
        return json.loads(entries[0].entry)

    def check_extends(self, old: TreeHead) -> TreeHead:
        """The current head, checked to extend `old` (a consistency proof): the history was not rewritten."""
        new = self.tree_head()
        if new.size < old.size:
            raise LogVerificationError(f"the log shrank from {old.size} to {new.size} entries")
        if old.size:
            self.verify_consistency(old, new, self.consistency_proof(old.size, new.size))
        return new

    def challenge_log(self, challenge_id: str) -> wire.ChallengeLogOut:
        """The log's entries about one challenge, as served (unchecked)."""
        return self._send(_Call("GET", f"/v1/log/challenges/{challenge_id}", model=wire.ChallengeLogOut))

    def transcript_log_differences(self, doc: dict[str, Any]) -> tuple[TreeHead, dict[str, int], list[str]]:
        """Check a transcript against the log: each of its challenge's entries is in the tree a signed head
        signs (inclusion proof), and their bodies and order bind the transcript
        (`gpuproof.verifier.evidence.challenge_differences`). Returns the head, the entries by kind and every
        difference (empty: the log binds this transcript). Precondition: `doc` parsed as a transcript."""
        served = self.challenge_log(doc["challenge"]["challenge_id"]).entries
        head = self.tree_head()  # after the entries: a growing log holds them all
        diffs, checked = [], []
        for e in served:
            try:
                self.verify_inclusion(head, e.index, e.entry, self.inclusion_proof(e.index, head.size))
            except (LogVerificationError, GatewayError) as exc:
                diffs.append(str(exc))
                continue
            checked.append((e.index, e.entry))
        diffs += evidence.challenge_differences(doc, checked)
        return head, {e.kind: e.index for e in served}, diffs

    def audit_log(self, head: TreeHead, audit: evidence.LogAudit | None = None) -> evidence.LogAudit:
        """Every entry up to `head.size` read and checked (`gpuproof.verifier.evidence.LogAudit`), 200 at a time,
        continuing `audit` where it stopped; then the recomputed root compared with the head's."""
        audit = audit or evidence.LogAudit()
        while audit.size < head.size:
            page = self.log_entries(audit.size, min(head.size, audit.size + 200)).entries
            if not page:
                break
            before = audit.size
            for e in page:
                audit.add(e.index, e.kind, e.entry, e.leaf_hash)
            if audit.size == before:  # an entry out of place: it is a difference already; stop here
                break
        audit.check_root(head.size, head.root)
        return audit


class AsyncGatewayClient(_Base):
    """Asynchronous client with the same calls (the ones a marketplace or renter needs)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, limits=_LIMITS)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> Any:
        return self._result(await self._send_raw(call), call.model)

    async def _send_raw(self, call: _Call) -> httpx.Response:
        try:
            return await self._http.request(call.method, call.path, content=call.body, headers=self._headers(call),
                                            **_timeout(call))
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, f"{type(exc).__name__}: {exc}") from None

    async def register(self, name: str, devices: list[dict]) -> wire.ProviderOut:
        return await self._send(self._c_register(name, devices))

    async def poll(self, device: int = 0, wait_s: float = 0.0) -> Poll:
        response = await self._send_raw(self._c_next(device, wait_s))
        return Poll.parse(response, self._result(response, wire.ChallengeOut))

    async def next_challenge(self, device: int = 0) -> tuple[wire.ChallengeOut | None, str | None, float | None]:
        """(challenge or None, RTT probe, Retry-After seconds when nothing is due): `poll` as a tuple."""
        p = await self.poll(device)
        return p.challenge, p.probe, p.retry_after_s

    async def update_registration(self, name: str, devices: list[dict]) -> wire.ProviderOut:
        return await self._send(self._c_update_registration(name, devices))

    async def echo_rtt(self, probe: str) -> wire.RttOut:
        return await self._send(self._c_rtt(probe))

    async def commit(self, challenge_id: str, roots: list[bytes]) -> wire.OpeningRequestOut:
        return await self._send(self._c_commit(challenge_id, roots))

    async def open(self, challenge_id: str, openings: list[dict]) -> wire.VerdictOut:
        return await self._send(self._c_open(challenge_id, openings))

    async def providers(self, **filters: Any) -> wire.ProviderPage:
        return await self._send(self._c_providers(**filters))

    async def provider(self, provider_id: str) -> wire.ProviderOut:
        return await self._send(_Call("GET", f"/v1/providers/{provider_id}", model=wire.ProviderOut))

    async def trust(self, provider_id: str) -> wire.TrustOut:
        return await self._send(_Call("GET", f"/v1/providers/{provider_id}/trust", model=wire.TrustOut))

    async def verdicts(self, provider_id: str, limit: int = 50, offset: int = 0) -> wire.VerdictPage:
        return await self._send(_Call("GET", self._path(f"/v1/providers/{provider_id}/verdicts",
                                                        {"limit": limit, "offset": offset}),
                                        model=wire.VerdictPage))

    async def transcript(self, challenge_id: str) -> dict:
        return await self._send(_Call("GET", f"/v1/challenges/{challenge_id}/transcript"))

    async def create_job(self, renter_ref: str, provider_id: str, price_ref: str, checkpoint_policy=None,  # noqa: ANN001
                         devices: list[int] | None = None, paid_class: str | None = None,
                         validators: list[str] | None = None) -> wire.JobOut:
        return await self._send(self._c_create_job(renter_ref, provider_id, price_ref, checkpoint_policy, devices,
                                                   paid_class, validators))

    async def settle(self, job_id: str) -> wire.JobOut:
        return await self._send(_Call("POST", f"/v1/jobs/{job_id}/settlement", api_key=True, model=wire.JobOut))

    async def tree_head(self) -> TreeHead:
        return TreeHead.parse(await self._send(_Call("GET", "/v1/log/head")), self.pinned_log_key)

    async def check_extends(self, old: TreeHead) -> TreeHead:
        new = await self.tree_head()
        if new.size < old.size:
            raise LogVerificationError(f"the log shrank from {old.size} to {new.size} entries")
        if old.size:
            proof = await self._send(_Call("GET", self._path("/v1/log/consistency", {"old": old.size,
                                                                                      "new": new.size}),
                                           model=wire.ConsistencyProofOut))
            self.verify_consistency(old, new, proof)
        return new
