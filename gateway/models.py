"""SQLAlchemy 2.0 models of the gateway's storage (migrations in gateway/migrations)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Provider(Base):
    __tablename__ = "providers"
    # the listings' orders (gateway.pages: keyset pages), by creation and by name; migration 0021
    __table_args__ = (Index("ix_providers_created_at_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    # where it registered from (gateway.limits.source_of: the address, an IPv6 /64), for the share of open
    # challenges the new devices of one source may hold; NULL for providers registered before it was kept
    source: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


Index("ix_providers_lower_name_id", func.lower(Provider.name), Provider.id)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("provider_id", "position"),
                      # ?model= listings: the providers holding a class, from the index alone
                      Index("ix_devices_verified_class_until_provider", "verified_class", "verified_until",
                            "provider_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(Integer)
    vram_gib: Mapped[float] = mapped_column(Float)
    profile: Mapped[str] = mapped_column(String(40))
    next_due_at: Mapped[float] = mapped_column(Float, default=0.0)
    # the class its recent passes proved most often (verifier.hardware.verified_classes), stored for ?model=
    # listings, and until when it holds unless a pass comes (gateway.service.store_verified); never worked
    # out yet: both null (the maintenance sweep does it)
    verified_class: Mapped[str | None] = mapped_column(String(40), nullable=True)
    verified_until: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class RequestNonce(Base):
    __tablename__ = "request_nonces"
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float, index=True)


class ValidatorNonce(Base):
    """A nonce of a validator's signed read (gateway/tenancy.py): kept as long as request nonces, so a
    signed GET is answered once (issue 18)."""

    __tablename__ = "validator_nonces"
    validator_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # lowercase hex
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float, index=True)


class Challenge(Base):
    __tablename__ = "challenges"
    # a provider's verdicts newest first, paged by keyset (GET /v1/providers/{id}/verdicts); migration 0021
    __table_args__ = (Index("ix_challenges_provider_judged_id", "provider_id", "judged_at", "id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    device_model: Mapped[str] = mapped_column(String(200))
    profile: Mapped[str] = mapped_column(String(40))
    seed: Mapped[bytes] = mapped_column(LargeBinary(32))
    spec: Mapped[str] = mapped_column(String(16))  # the challenge spec it was issued in (gpuproof/1, gpuproof/2)
    m: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(Integer)
    rounds: Mapped[int] = mapped_column(Integer)
    spot_checks: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[float] = mapped_column(Float)
    expected_s: Mapped[float] = mapped_column(Float)
    fast_s: Mapped[float] = mapped_column(Float)
    slow_s: Mapped[float] = mapped_column(Float)
    deadline_s: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), index=True)  # issued, committed, judged
    roots: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    received_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    rtt_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    measured_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    commit_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pairs: Mapped[Any] = mapped_column(JSON, nullable=True)
    x: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    openings: Mapped[Any] = mapped_column(JSON, nullable=True)
    openings_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verdict: Mapped[Any] = mapped_column(JSON, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(8), nullable=True)
    judged_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # first handed to its device
    # spec v2's memory phase (a profiled card): the plan fixed at issue; the walk's nonce, drawn with the
    # opening request, and when it was sent; the walk root with its arrival and the verifier's timing; the
    # lanes drawn after it; the opened lanes (kernels.memory.LaneOpening.to_json)
    memory_plan: Mapped[Any] = mapped_column(JSON, nullable=True)
    walk_nonce: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    nonce_sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    walk_root: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    walk_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    walk_received_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    walk_rtt_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    walk_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    lanes: Mapped[Any] = mapped_column(JSON, nullable=True)
    lane_openings: Mapped[Any] = mapped_column(JSON, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    # the marketplace the key acts for: its jobs and validators are the tenant's, invisible to other tenants
    tenant: Mapped[str] = mapped_column(String(100), index=True)


class Validator(Base):
    """A validator a tenant registered: the Ed25519 public key its replay results and requests are signed
    with. A job names some of its tenant's validators; only they may read its uploads and judge its audits."""

    __tablename__ = "validators"
    __table_args__ = (UniqueConstraint("tenant", "public_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # lowercase hex
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    renter_ref: Mapped[str] = mapped_column(String(200))
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    price_ref: Mapped[str] = mapped_column(String(200))
    checkpoint_policy: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)  # the creating key's
    validators: Mapped[Any] = mapped_column(JSON, nullable=True)  # public keys (hex) the tenant named for it
    renter_salt: Mapped[str | None] = mapped_column(String(32), nullable=True)  # private: commits to renter_ref
    decision: Mapped[str | None] = mapped_column(String(8), nullable=True)
    reasons: Mapped[Any] = mapped_column(JSON, nullable=True)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    training_state: Mapped[str | None] = mapped_column(String(8), nullable=True)  # open, closed
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    training_flags: Mapped[Any] = mapped_column(JSON, nullable=True)
    devices: Mapped[Any] = mapped_column(JSON, nullable=True)  # device positions the job pays for
    paid_class: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the profile paid for
    # the creating request's Idempotency-Key header, unique per API key, and its body's SHA-256: a create
    # resent with the same key gets this job back instead of making another
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (UniqueConstraint("created_by", "idempotency_key", name="uq_jobs_created_by_idempotency_key"),)


class TrainingCommitment(Base):
    """One checkpoint commitment of a job, as the provider signed it and when the gateway received it.
    The signed request (its headers and body) is kept, so anyone can re-check who committed what."""

    __tablename__ = "training_commitments"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    batch_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # NULL since bodies are stored once: the manifest is in the signed body (`request`), read through
    # gateway.routers.training.manifest_json_of; rows stored before that keep it here
    manifest: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    received_at: Mapped[float] = mapped_column(Float)
    request: Mapped[Any] = mapped_column(JSON)  # timestamp, nonce, signature, body


class SegmentAudit(Base):
    """A drawn segment t -> t+k of a job: the upload at t, the openings at t+k, the replay's verdict."""

    __tablename__ = "segment_audits"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    start_step: Mapped[int] = mapped_column(BigInteger)
    end_step: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[Any] = mapped_column(JSON)
    drawn_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(12), index=True)  # requested, ready, judged
    upload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    upload_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    batches: Mapped[Any] = mapped_column(JSON, nullable=True)
    opened: Mapped[Any] = mapped_column(JSON, nullable=True)
    verdict: Mapped[Any] = mapped_column(JSON, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(8), nullable=True)
    judged_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class LogHead(Base):
    """One row: the log's size, locked while appending so that entries get consecutive indices."""

    __tablename__ = "log_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)


class LogEntry(Base):
    __tablename__ = "log_entries"
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[float] = mapped_column(Float)
    # set on the entries about one challenge (commitment, opening-request, verdict), to find them by it
    challenge_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class LogNode(Base):
    """The hash of a complete aligned subtree of the log's tree: leaves [idx * 2**height, (idx + 1) * 2**height),
    height >= 1 (height 0 is log_entries.leaf_hash). Written by the append that completes it, never changed:
    heads and proofs read O(log^2 size) of these rows, not every leaf (gateway/translog.py)."""

    __tablename__ = "log_nodes"
    height: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class RttProbe(Base):
    """A round-trip probe sent with a poll response; the agent echoes it at once (docs/gateway.md)."""

    __tablename__ = "rtt_probes"
    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    sent_at: Mapped[float] = mapped_column(Float, index=True)  # the sweep deletes by age
    rtt_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class WebhookEndpoint(Base):
    """An endpoint a tenant registered for webhooks (gateway/webhooks.py): its URL, the event types it
    wants and the secret its deliveries are signed with (kept as given: HMAC needs it)."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[Any] = mapped_column(JSON)  # a list of verifier.webhooks.EVENT_TYPES
    description: Mapped[str | None] = mapped_column(String(100), nullable=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)
    # after a rotation, the secret before it: deliveries are signed with it too until `previous_until`
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_until: Mapped[float | None] = mapped_column(Float, nullable=True)

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a delivery attempt at `now` is signed with: the current one, and the previous one
        while its overlap lasts."""
        if self.previous_secret is not None and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


class WebhookDelivery(Base):
    """One event for one endpoint (the outbox): stored in the transaction that made the event, sent by the
    delivery loop of any replica. Its id is the `webhook-id` of every attempt and redelivery."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent and signed
    created_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(12), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # all attempts, redeliveries included
    retries: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts since it was last (re)queued
    next_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)  # pending only
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the receiver's HTTP status
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class WebhookAttempt(Base):
    """One try at sending a delivery: when, the HTTP status (null: no answer) and why it failed."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[float] = mapped_column(Float)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    duration_s: Mapped[float] = mapped_column(Float)


class ProviderScore(Base):
    """A provider's trust as of `computed_at`, kept for the public listings: they filter, sort and page by
    these indexed columns, so a page costs O(page) whatever the number of providers. Written in the
    transaction that adds evidence (gateway.service.evidence_changed) and refreshed by the maintenance sweep
    as evidence ages (settings.trust_refresh_s); settlement and /trust always compute afresh."""

    __tablename__ = "provider_scores"
    # each listed order with the provider id after it, so ties keep one order and a keyset page is a range
    # scan of one index (gateway.pages); migration 0021
    __table_args__ = tuple(Index(f"ix_provider_scores_{c}_id", c, "provider_id")
                           for c in ("score", "lower_bound", "evidence"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    lower_bound: Mapped[float] = mapped_column(Float)
    evidence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    computed_at: Mapped[float] = mapped_column(Float, index=True)


class ProviderTrustStatus(Base):
    """A provider's trust status as last reported to webhooks, to tell when it changes."""

    __tablename__ = "provider_trust_status"
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[float] = mapped_column(Float)
