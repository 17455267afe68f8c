"""The gateway API's JSON answers, one pydantic model per wire form, and the hex and id field types.

The server declares these as its routes' response models (so /openapi.json documents every 2xx body), and
the client SDK parses answers into them. Pydantic only: no FastAPI, SQL or HTTP, so the SDK and the agent use
them without the server's dependencies. Field order is the order of the JSON the gateway has always sent.
Bytes are lowercase hex on the wire (`Hex32`, `Hex64`, `Hex128`); the protocol's own objects
(verifier.protocol, kernels.backend.Opening, ...) decode them once, at the edge.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier.ids import ID_BYTES, hex_pattern
from gpuproof.verifier.outcome import Correctness, Outcome, Timing
from pydantic import BaseModel, Field

# ---------------------------------------------------------------------------------------------------------
# Hex and ids (verifier/ids.py: the one validator)

Hex32 = Annotated[str, Field(pattern=hex_pattern(16), description="16 bytes, lowercase hex")]
Hex64 = Annotated[str, Field(pattern=hex_pattern(32), description="32 bytes, lowercase hex")]
Hex128 = Annotated[str, Field(pattern=hex_pattern(64), description="64 bytes, lowercase hex")]
Id = Annotated[str, Field(pattern=hex_pattern(ID_BYTES), description="an id: 32 lowercase hex characters")]

# ---------------------------------------------------------------------------------------------------------
# Providers and trust


class TrustScoreOut(BaseModel):
    """A trust score (verifier.trust.TrustScore)."""

    score: float
    lower_bound: float
    evidence: int
    effective_evidence: float
    verified_class: str | None
    last_verified_at: float | None
    status: Literal["unproven", "trusted", "suspect"]
    reasons: list[str]


class TrustOut(BaseModel):
    """GET /v1/providers/{id}/trust: the provider's id and its trust score."""

    provider_id: Id
    score: float
    lower_bound: float
    evidence: int
    effective_evidence: float
    verified_class: str | None
    last_verified_at: float | None
    status: Literal["unproven", "trusted", "suspect"]
    reasons: list[str]


class DeviceOut(BaseModel):
    position: int
    model: str
    count: int
    vram_gib: float
    claimed_profile: str
    verified_class: str | None = None


class ProviderOut(BaseModel):
    id: Id
    name: str
    public_key: Hex64
    created_at: float
    devices: list[DeviceOut]
    trust: TrustScoreOut | None = None


class ProviderPage(BaseModel):
    """One page of providers. `total` counts at most 10,000 matches (`total_exact` false: there are more);
    `next_cursor` asks for the next page (`?cursor=`), null on the last."""

    items: list[ProviderOut]
    total: int
    total_exact: bool = True
    limit: int
    offset: int
    next_cursor: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Challenges


class OpeningRequestOut(BaseModel):
    """The rows to open, [round, row] pairs (verifier.protocol.OpeningRequest.public), and for a challenge
    with a memory phase the walk's nonce: the walk starts now, and its root is timed from this answer."""

    challenge_id: Id
    pairs: list[tuple[int, int]]
    walk_nonce: Hex32 | None = Field(default=None, description="the walk's 16-byte nonce (spec v2 memory phase): "
                                     "post the walk root at once (POST /v1/challenges/{id}/walk)")


class MemoryPlanOut(BaseModel):
    """A challenge's memory phase (kernels.memory.MemoryPlan.to_dict): the last `table_rounds` rounds' C are the
    table; `lanes` lanes walk `steps` steps each; `opened` lanes are opened."""

    spec: Literal["gpuproof/2-memory"]
    table_rounds: int
    lanes: int
    steps: int
    opened: int


class LaneRequestOut(BaseModel):
    """The lanes to open (verifier.protocol.LaneRequest.public), drawn after the walk root was stored; open
    them with the rows, in this order, repeats included."""

    challenge_id: Id
    lanes: list[int]


class ChallengeOut(BaseModel):
    """A device's challenge (gpuproof/1 or gpuproof/2), with the opening request once its commitment is stored."""

    challenge_id: Id
    spec: str
    seed: Hex64
    m: int
    n: int
    k: int
    rounds: int
    issued_at: float
    deadline_s: float
    state: Literal["issued", "committed", "judged"]
    device: int | None
    opening_request: OpeningRequestOut | None = Field(
        default=None, description="present once the commitment is stored (a resumed challenge)")
    memory: MemoryPlanOut | None = Field(
        default=None, description="spec v2's memory phase, on a profiled card: keep the table, walk after the "
                                  "commitment")
    lane_request: LaneRequestOut | None = Field(
        default=None, description="present once the walk root is stored (a resumed challenge)")

    def params(self) -> ChallengeParams:
        """The challenge's parameters (kernels.spec.ChallengeParams.from_json: the one parser)."""
        return ChallengeParams.from_json(self.model_dump())


class RttOut(BaseModel):
    probe: Hex32
    rtt_s: float


class FailureOut(BaseModel):
    """The first failed check of a verdict (verifier.protocol.Failure); round and row -1 for a whole-challenge
    failure (a timeout, withheld openings)."""

    round: int
    row: int
    reason: str
    detail: str


class WalkLimitsOut(BaseModel):
    expected_s: float
    fast_s: float
    slow_s: float
    deadline_s: float


class MemoryFindingOut(BaseModel):
    """The memory phase's part of a verdict (verifier.memory.MemoryFinding.to_json): the opened lanes'
    check, the walk's time against its limits, the memory-capacity finding and the bandwidth class, each
    with the pass probability stated for the best substitute of its kind."""

    passed: bool
    failure: str | None
    walk_s: float
    walk_class: Literal["consistent", "slower-than-claimed", "faster-than-claimed", "timeout"]
    limits: WalkLimitsOut
    walk_gbs: float
    slow_limit_gbs: float
    table_bytes: int
    claimed_memory_bytes: int
    capacity: Literal["holds-table", "not-shown", "failed"]
    capacity_pass_probability: float
    capacity_substitute: str | None
    bandwidth_class: str
    bandwidth_pass_probability: float
    bandwidth_substitute: str | None
    reasons: list[str]


class VerdictOut(BaseModel):
    """A challenge's verdict (verifier.protocol.Verdict.to_json)."""

    challenge_id: Id
    outcome: Outcome
    correctness: Correctness
    failure: FailureOut | None
    timing: Timing
    measured_s: float
    expected_s: float
    measured_tops: float
    best_match: str
    claimed_profile: str
    cheat_pass_probability: float
    cheat_model: dict[str, Any]
    reasons: list[str]
    memory: MemoryFindingOut | None = Field(default=None, description="spec v2's memory finding (a profiled card)")


class VerdictItem(BaseModel):
    challenge_id: Id
    judged_at: float
    verdict: VerdictOut


class VerdictPage(BaseModel):
    """One page of verdicts, newest first; `next_cursor` asks for the next page (`?cursor=`), null on the last."""

    items: list[VerdictItem]
    limit: int
    offset: int
    next_cursor: str | None = None


class OpeningOut(BaseModel):
    """One opened row (kernels.backend.Opening.to_json)."""

    round: int
    row: int
    values: list[int]
    path: list[Hex64]


class TranscriptThresholds(BaseModel):
    expected_s: float
    fast_s: float
    slow_s: float
    deadline_s: float


class TranscriptChallenge(BaseModel):
    challenge_id: Id
    seed: Hex64
    m: int
    n: int
    k: int
    rounds: int
    device_model: str
    profile: str
    issued_at: float
    spot_checks: int
    thresholds: TranscriptThresholds


class TranscriptCommitment(BaseModel):
    roots: list[Hex64]
    received_at: float
    rtt_s: float
    measured_s: float


class TranscriptRequest(BaseModel):
    pairs: list[tuple[int, int]]
    x: str = Field(description="the Freivalds vector, little-endian uint32, hex")


class TranscriptMemoryPlan(BaseModel):
    table_rounds: int
    lanes: int
    steps: int
    opened: int


class TranscriptWalk(BaseModel):
    walk_root: Hex64
    nonce_sent_at: float
    received_at: float
    rtt_s: float
    walk_s: float


class LaneOpeningOut(BaseModel):
    """One opened lane (kernels.memory.LaneOpening.to_json)."""

    lane: int
    state: Hex32
    path: list[Hex64]
    leaves: list[str] = Field(description="each leaf the lane read, the raw C_r leaf (1 KiB), hex")
    leaf_paths: list[list[Hex64]]


class TranscriptMemory(BaseModel):
    """A memory phase's evidence: the plan, the nonce, the walk with the verifier's timing, the lanes drawn
    and the opened lanes (null walk or lanes: it never got that far)."""

    plan: TranscriptMemoryPlan
    nonce: Hex32 | None
    walk: TranscriptWalk | None
    lanes: list[int] | None
    lane_openings: list[LaneOpeningOut]


class TranscriptOut(BaseModel):
    """A judged challenge's evidence (verifier.transcript, gpuproof.transcript/1), served as canonical JSON."""

    version: str
    spec: str
    challenge: TranscriptChallenge
    commitment: TranscriptCommitment
    request: TranscriptRequest
    openings: list[OpeningOut]
    verdict: VerdictOut
    memory: TranscriptMemory | None = Field(default=None, description="spec v2's memory phase (a profiled card)")


# ---------------------------------------------------------------------------------------------------------
# Jobs and settlement


class JobOut(BaseModel):
    """A job, its hardware binding and its settlement decision (null until asked)."""

    id: Id
    renter_ref: str
    provider_id: Id
    price_ref: str
    checkpoint_policy: dict[str, Any]
    created_at: float
    decision: Literal["release", "hold", "refund"] | None
    reasons: list[str] | None
    decided_at: float | None
    final: bool
    training_state: Literal["open", "closed"] | None
    devices: list[int] | None
    paid_class: str | None
    validators: list[str] | None
    renter_salt: str | None
    renter_commitment: Hex64 | None


class ValidatorOut(BaseModel):
    public_key: str
    name: str
    created_at: float


# ---------------------------------------------------------------------------------------------------------
# Training proofs


class CheckpointOut(BaseModel):
    """A stored checkpoint commitment with its arrival time (hashes hex)."""

    step: int
    root: Hex64
    batch_hash: Hex64
    prev_hash: Hex64
    hash: Hex64
    received_at: float


class CheckpointWithManifest(CheckpointOut):
    manifest: list[dict[str, Any]]


class AuditOut(BaseModel):
    """A segment audit: the drawn segment and chunks, its state, and its verdict once judged."""

    audit_id: Id
    job_id: Id
    start_step: int
    end_step: int
    chunks: list[tuple[str, int]]
    drawn_at: float
    deadline_at: float
    state: Literal["requested", "ready", "judged"]
    uploaded: bool
    opened: bool
    outcome: Outcome | None
    verdict: dict[str, Any] | None


class TrainingOut(BaseModel):
    """A job's training run: its state, timing flags and audits."""

    job_id: Id
    state: Literal["open", "closed"] | None
    closed_at: float | None
    policy: dict[str, Any]
    flags: list[str]
    audits: list[AuditOut]


class TrainingEvidenceOut(TrainingOut):
    """A job's training evidence: the run, with every commitment and its arrival time."""

    commitments: list[CheckpointOut]


class OpenedChunkOut(BaseModel):
    name: str
    index: int
    chunk: str
    path: list[Hex64]


class ReplayMaterialsOut(BaseModel):
    """What a validator needs to replay a segment, except the state itself."""

    audit: AuditOut
    policy: dict[str, Any]
    start: CheckpointWithManifest
    end: CheckpointWithManifest
    upload_sha256: Hex64 | None
    upload_bytes: int | None
    batches: list[list[int]]
    openings: list[OpenedChunkOut]


# ---------------------------------------------------------------------------------------------------------
# The transparency log


class TreeHeadOut(BaseModel):
    """The signed tree head (client: TreeHead.parse checks its checkpoint): `checkpoint` is the signed
    note to verify (C2SP tlog-checkpoint; docs/gateway.md, "Checkpoints"); `timestamp` and `signature`
    are the older, deprecated head signature, kept for clients of earlier versions."""

    size: int
    root: Hex64
    origin: str = Field(description="the log's origin: the checkpoint's first line and its key name")
    checkpoint: str = Field(description="the signed checkpoint (C2SP tlog-checkpoint) of size and root, the "
                            "exact text GET /v1/log/checkpoint serves")
    verifier_key: str = Field(description="the log's note verifier key: <origin>+<key ID hex>+<base64(0x01 || "
                              "public key)>, as golang.org/x/mod/sumdb/note reads it")
    public_key: Hex64
    timestamp: float = Field(description="deprecated: the time the older signature covers")
    signature: Hex128 = Field(description="deprecated: Ed25519 over 'gpuproof-tree-head/1\\n' size, root hex "
                              "and Python's repr(timestamp), one per line; verify `checkpoint` instead")


class LogEntryOut(BaseModel):
    index: int
    kind: str
    entry: str = Field(description="the entry's canonical JSON text: its leaf hash is over these bytes")
    leaf_hash: Hex64


class LogEntriesOut(BaseModel):
    size: int
    entries: list[LogEntryOut]


class ChallengeLogOut(BaseModel):
    challenge_id: Id
    entries: list[LogEntryOut]


class InclusionProofOut(BaseModel):
    index: int
    size: int
    leaf_hash: Hex64
    proof: list[Hex64]


class ConsistencyProofOut(BaseModel):
    old: int
    new: int
    proof: list[Hex64]


# ---------------------------------------------------------------------------------------------------------
# Health


class HealthOut(BaseModel):
    status: Literal["ok"]


class IdentityOut(BaseModel):
    """What a client needs to sign requests to this gateway (docs/gateway.md, "Authentication")."""

    audience: str = Field(description="the audience line of request signatures: this gateway's identity")
    public_key: str = Field(description="the gateway's Ed25519 public key (hex), which signs its log")
    signature_version: Literal["2"] = Field(description="the X-Gpuproof-Signature-Version it checks")


class ReadyOut(BaseModel):
    status: Literal["ready"]
    migration: str | None
