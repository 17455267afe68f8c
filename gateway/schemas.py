"""Request bodies (pydantic): validated at the edge, hex decoded once. The answers' models are in
verifier/wire.py, shared with the client."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from gpuproof.verifier import webhooks
from gpuproof.verifier.ids import ID_BYTES, hex_pattern
from gpuproof.verifier.wire import Hex32, Hex64, Hex128
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # printable text only: PostgreSQL cannot store NUL, and logs should not
Text100 = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_CONTROL)]
Text200 = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]

MAX_INDEX = 2**53  # offsets, indices and sizes in queries: beyond any real count, inside every database's integers
IdPath = Annotated[str, Path(pattern=hex_pattern(ID_BYTES), description="an id: 32 lowercase hex characters")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceClaim(Strict):
    """One physical card. `count` stays for old clients and must be 1: N cards are N devices, each challenged
    at the same instant as the others (one card registered as N devices fails N-1 of them)."""

    model: Text200
    count: Annotated[int, Field(ge=1, le=1, description="always 1: register each card as its own device")] = 1
    vram_gib: Annotated[float, Field(gt=0, le=4096)]


class Registration(Strict):
    public_key: Annotated[Hex64, Field(description="Ed25519 public key")]
    name: Text100
    devices: Annotated[list[DeviceClaim], Field(min_length=1, max_length=64)]


class RegistrationUpdate(Strict):
    """A registered provider's new name and devices (PUT /v1/providers/{id}, a request signed by its key)."""

    name: Text100
    devices: Annotated[list[DeviceClaim], Field(min_length=1, max_length=64)]


class NextChallenge(Strict):
    device: Annotated[int, Field(ge=0, le=63, description="position of the device in the registration")] = 0
    wait_s: Annotated[float, Field(ge=0, le=120, description="long poll: wait up to this long (capped by the "
                                   "gateway's long_poll_max_s) for a challenge before answering 204")] = 0.0


class CommitmentIn(Strict):
    roots: Annotated[list[Hex64], Field(min_length=1, max_length=100_000)]


class OpeningIn(Strict):
    """One opened row. Integers are JSON integers (not "390", not 2.0) and every field is bounded: a round or
    row beyond any challenge's (2**31) is refused before it reaches the verifier or the database."""

    round: Annotated[StrictInt, Field(ge=0, lt=2**31)]
    row: Annotated[StrictInt, Field(ge=0, lt=2**31)]
    values: Annotated[list[Annotated[StrictInt, Field(ge=-2**31, le=2**31 - 1)]], Field(max_length=1 << 20)]
    path: Annotated[list[Hex64], Field(max_length=64)]


class LaneOpeningIn(Strict):
    """One opened lane (kernels.memory.LaneOpening): its final state and path in the walk tree, and each leaf
    it read, in walk order, as the raw C_r leaf with its path in its round's tree."""

    lane: Annotated[int, Field(ge=0, lt=2**63)]
    state: Hex32
    path: Annotated[list[Hex64], Field(max_length=64)]
    leaves: Annotated[list[Annotated[str, Field(pattern=hex_pattern(1024))]], Field(max_length=1024)]
    leaf_paths: Annotated[list[Annotated[list[Hex64], Field(max_length=64)]], Field(max_length=1024)]


class WalkIn(Strict):
    walk_root: Annotated[Hex64, Field(description="root of the RFC 6962 tree over the lanes' final states")]


class OpeningsIn(Strict):
    openings: Annotated[list[OpeningIn], Field(min_length=1, max_length=4096)]
    lanes: Annotated[list[LaneOpeningIn], Field(max_length=4096, description="the opened lanes, in the order "
                     "drawn (a challenge with a memory phase)")] | None = None


class JobIn(Strict):
    renter_ref: Text200
    provider_id: Hex32
    price_ref: Text200
    checkpoint_policy: dict[str, Any] = Field(default_factory=dict)
    # the device positions the job pays for (default: all of the provider's devices) and the class paid
    # for, a profile key (default: the slowest class the named devices claim; required when one is unprofiled)
    devices: Annotated[list[Annotated[int, Field(ge=0, le=4096)]], Field(min_length=1, max_length=256)] | None = None
    paid_class: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    # the validators (public keys the tenant registered, POST /v1/validators) that may read the job's uploads
    # and judge its audits; default: all the tenant's validators when the job is created
    validators: Annotated[list[Hex64], Field(max_length=64)] | None = None


class ValidatorIn(Strict):
    public_key: Annotated[Hex64, Field(description="the validator's Ed25519 public key")]
    name: Text100


class RttEcho(Strict):
    probe: Hex32


class TensorIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=512, pattern=NO_CONTROL)]
    dtype: Annotated[str, Field(pattern=r"^[<>|=]?[a-zA-Z][a-zA-Z0-9]{0,15}$")]
    shape: Annotated[list[Annotated[int, Field(ge=0, lt=2**40)]], Field(max_length=32)]
    nbytes: Annotated[int, Field(ge=0, lt=2**44)]


class CheckpointIn(Strict):
    """One checkpoint commitment (verifier.checkpoints): the chain fields and the state's manifest."""

    step: Annotated[int, Field(ge=0, lt=2**63)]
    root: Hex64
    batch_hash: Hex64
    prev_hash: Hex64
    hash: Hex64
    manifest: Annotated[list[TensorIn], Field(min_length=1, max_length=4096)]


class OpenedChunkIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=512, pattern=NO_CONTROL)]
    index: Annotated[int, Field(ge=0, lt=2**40)]
    chunk: Annotated[str, Field(pattern=hex_pattern(1024), description="the 1 KiB chunk, lowercase hex")]
    path: Annotated[list[Hex64], Field(max_length=64)]


class SegmentOpeningsIn(Strict):
    """The segment's batch indices (one list per step) and the requested chunks of its end state."""

    batches: Annotated[list[Annotated[list[Annotated[int, Field(ge=0, lt=2**63)]], Field(max_length=1 << 16)]],
                       Field(min_length=1, max_length=100_000)]
    openings: Annotated[list[OpenedChunkIn], Field(min_length=1, max_length=256)]


class ReplayResultIn(Strict):
    """A validator's replay of one segment, signed with its Ed25519 key (verifier.signatures.replay_message)."""

    outcome: Annotated[str, Field(pattern=r"^(pass|fail)$")]
    mode: Annotated[str, Field(pattern=r"^(exact|tolerance)$")]
    reason: Annotated[str, Field(min_length=1, max_length=1000, pattern=NO_CONTROL)]
    tensor: Annotated[str | None, Field(max_length=512, pattern=NO_CONTROL)] = None
    chunk: Annotated[int | None, Field(ge=0, lt=2**40)] = None
    distance: Annotated[float | None, Field(ge=0, allow_inf_nan=False)] = None
    tau: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    validator_key: Annotated[Hex64, Field(description="the validator's Ed25519 public key")]
    signature: Hex128


WebhookEvent = Literal["verdict", "settlement", "trust"]  # verifier.webhooks.EVENT_TYPES


class WebhookEndpointIn(Strict):
    """An endpoint to register: where to POST and which event types (docs/api.md, "Receive webhooks")."""

    url: Annotated[str, Field(min_length=1, max_length=webhooks.MAX_URL_LENGTH,
                              description="http or https; no credentials, no fragment")]
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=len(webhooks.EVENT_TYPES))]
    description: Text100 | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            return webhooks.check_url(url)
        except webhooks.WebhookError as exc:
            raise ValueError(str(exc).removeprefix("url: ")) from None

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("an event type is named twice")
        return sorted(events)


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: float


class WebhookEndpointCreated(WebhookEndpointOut):
    secret: str = Field(description="whsec_<base64>: verifies the deliveries' signatures; shown only now")


class WebhookSecretRotation(Strict):
    """A rotation of an endpoint's secret: how long the previous secret keeps signing deliveries too."""

    overlap_s: Annotated[float | None, Field(ge=0, le=webhooks.MAX_OVERLAP_S, allow_inf_nan=False,
                                             description="seconds the previous secret also signs deliveries "
                                                         "(default GPUPROOF_WEBHOOK_SECRET_OVERLAP_S); 0 ends "
                                                         "it at once")] = None


class WebhookSecretRotated(BaseModel):
    secret: str = Field(description="the new whsec_<base64> secret; shown only now")
    previous_valid_until: float | None = Field(description="until when (unix seconds) deliveries are signed "
                                                           "with the previous secret too; null: not at all")


class WebhookAttemptOut(BaseModel):
    at: float
    status: int | None = Field(description="the receiver's HTTP status; null when it did not answer")
    error: str | None
    duration_s: float


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="the webhook-id header of every attempt")
    endpoint_id: str
    event_type: str
    state: str = Field(description="pending, delivered or failed")
    created_at: float
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    delivered_at: float | None


class WebhookDeliveryDetail(WebhookDeliveryOut):
    payload: dict[str, Any] = Field(description="the body sent, parsed (the exact bytes are what was signed)")
    history: list[WebhookAttemptOut]


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryOut]
    total: int
    limit: int
    offset: int
