"""Gateway settings (pydantic-settings, environment prefix GPUPROOF_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from gpuproof.verifier.schedule import SchedulePolicy
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPROOF_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("gpuproof")) / "gateway")
    database_url: str | None = None  # default: SQLite (WAL) in data_dir
    signing_key_path: Path | None = None  # default: data_dir / "gateway-signing.key" (made on first start)
    # the origin line of the log's checkpoints and the key name they are signed under (C2SP
    # tlog-checkpoint; docs/gateway.md, "Checkpoints"), e.g. "gateway.example.com/log"; default
    # "gpuproof/log/<first 16 hex of SHA-256 of the signing key>"; no spaces and no "+"
    log_origin: str | None = None
    timestamp_window_s: float = 60.0
    # the gateway's identity in request signatures (docs/gateway.md, "Authentication"): a signature made
    # for one gateway is refused by any other. Default: its log signing key's public key, hex; replicas
    # share that key, so they share the audience. 1-200 printable ASCII characters, no spaces.
    audience: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{1,200}$")
    # 32 opened rows of n = 8192 are ~2.5 MB of JSON; spec v2 adds 64 opened lanes of 64 leaves (1 KiB, 2 KiB
    # as hex) with their paths: ~13 MB at 8192 x 8192, so openings of a memory phase need up to ~16 MB
    max_body_bytes: int = 24 * 1024 * 1024
    max_upload_bytes: int = 256 * 1024 * 1024  # a checkpoint state uploaded for a segment replay
    body_timeout_s: float = 30.0  # a request body must arrive within this (slow-loris defence)
    max_page_size: int = 200
    spot_checks: int = 32
    # the spec of new challenges (docs/protocol.md, "Versioning"): gpuproof/2, or gpuproof/1 while agents
    # that only know v1 are still answering; stored challenges are judged under the spec they name
    challenge_spec: Literal["gpuproof/1", "gpuproof/2"] = "gpuproof/2"
    poll_retry_after_s: int = 30
    # verifier-scheduled rounds (verifier/schedule.py): the mean time between a provider's rounds, the mean
    # while one of its jobs is open, the minimum gap (default a tenth of the mean) and the start window
    # (0: a round is due at every poll, for tests)
    challenge_interval_s: float = Field(default=3600.0, ge=0)
    job_challenge_interval_s: float = Field(default=600.0, ge=0)
    challenge_min_gap_s: float | None = Field(default=None, ge=0)
    start_window_s: float = Field(default=5.0, gt=0)
    # how long after its deadline another device's poll, a settlement or the sweep waits before judging an
    # unanswered challenge a timeout (answers that came in time may still be under verification)
    expiry_grace_s: float = Field(default=60.0, ge=0, le=3600)
    long_poll_max_s: float = Field(default=25.0, ge=0, le=120)  # the longest a poll waits for a challenge
    provider_rate_per_s: float = 20.0
    ip_rate_per_s: float = 200.0
    # registrations (free identities, issue 18): per client address, a budget per hour that is also the
    # burst; for the whole gateway, a rate per second with a burst of twice that; 429 + Retry-After beyond
    registrations_per_ip_per_hour: float = Field(default=600.0, gt=0)
    registrations_per_s_global: float = Field(default=20.0, gt=0)
    worker_threads: int = 3  # threads for blocking work; see gateway/app.py and docs/performance.md
    # threads for the public reads of their own (gateway/sessions.py `in_read_threads`): a read never waits
    # behind writes queued for SQLite's write lock (issue 18: a flood of writes must not slow the reads)
    read_threads: int = Field(default=3, ge=1, le=64)
    # verification of openings (gateway/verify_pool.py): threads of its own; a freed one goes to the waiting
    # identity with the fewest running, identities taking turns; identities with no passed challenge yet
    # hold at most verify_threads_new of them together (issue 18: free identities cannot crowd out others)
    verify_threads: int = Field(default=2, ge=1, le=64)
    # the open challenges that new devices (no passed challenge at their claim yet) may hold together; a round
    # beyond it is deferred (204 + Retry-After) until some are judged (0: no limit)
    new_identity_open_challenges: int = Field(default=256, ge=0)
    # the same for the new devices of the providers registered from one address (an IPv6 /64), a share of
    # the above; a source that holds none may always start one round (0: no per-source limit)
    new_device_open_challenges_per_source: int = Field(default=64, ge=0)
    verify_threads_new: int = Field(default=1, ge=1, le=64)
    # no new challenge is issued when the poll asking for it waited longer than this for a worker thread:
    # an overloaded gateway defers challenges (204 + Retry-After) rather than issue ones it could not
    # answer in time (a challenge takes 3-4 requests against a 10 s deadline at least)
    admission_max_wait_s: float = 1.5
    trust_cache_s: float = 0.5  # how stale a score read may be (docs/gateway.md)
    # how many of the log's subtree hashes the public reads keep in memory (gateway/translog.py LogCache;
    # 0: none, every head and proof reads them from the database)
    log_cache_hashes: int = Field(default=200_000, ge=0, le=10_000_000)
    # how long the dashboard's front page is reused (and re-rendered in the background) for its readers
    page_cache_s: float = Field(default=0.5, ge=0, le=60)
    # how long a list's `total` (counted up to 10,000) is reused by its next pages (gateway/pages.py Totals)
    list_totals_s: float = Field(default=5.0, ge=0, le=300)
    # how old the stored score that listings filter and sort by may grow as its evidence ages (every new
    # verdict updates it at once; the maintenance sweep recomputes the stalest, BATCH a sweep)
    score_refresh_s: float = Field(default=3600.0, gt=0)
    # uploaded checkpoint states (gateway/blobs.py): "local" (DATA_DIR/uploads) or "s3" (the `s3` extra);
    # the quota bounds what is stored at once (0: no limit; 507 beyond it); docs/operations.md
    blob_store: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = "gpuproof/uploads/"
    s3_endpoint_url: str | None = None  # MinIO, R2, ...; credentials come from boto3's usual chain (AWS_*)
    s3_region: str | None = None
    blob_quota_bytes: int = Field(default=64 * 1024**3, ge=0)
    blob_quota_objects: int = Field(default=10_000, ge=0)
    # a checkpoint commitment's manifest (POST /v1/jobs/{id}/checkpoints): at most this many tensors and this
    # many bytes of canonical JSON (422 naming the setting beyond); stated in docs/api.md (issue 18)
    max_manifest_tensors: int = Field(default=4096, ge=1, le=4096)
    max_manifest_bytes: int = Field(default=512 * 1024, ge=1024)
    # what one provider's uploads awaiting their verdicts may hold (0: no limit); checked with the total
    # quota above from the signed headers, before a byte of the body is read (507; 413 for an upload
    # larger than the quota itself)
    upload_quota_bytes_per_provider: int = Field(default=4 * 1024**3, ge=0)
    # rate limits shared by every replica (gateway/limits.py, the `redis` extra); unset: per process
    redis_url: str | None = None
    redis_prefix: str = "gpuproof:"
    # how often overdue challenges and audits are judged and old nonces deleted (gateway/maintenance.py);
    # 0 turns the sweep off (then a provider's timeouts are judged on its next poll or a settlement)
    maintenance_interval_s: float = Field(default=60.0, ge=0)
    # "m,n,k,rounds": small challenges for tests and demos instead of the profile's sizing; entries
    # "profile=m,n,k,rounds" after a ";" override it for one claimed profile (the demo sizes an H100
    # claim so that a CPU needs far longer than the card would: "64,512,256,4;h100-sxm=256,2048,4096,8")
    verify_test_shape: str | None = None
    # an operator's measured profiles: a TOML file in the format of verifier/data/gpu_profiles.toml whose
    # entries are added to the packaged ones (one with a packaged key replaces it); docs/operations.md
    profiles_file: Path | None = None
    # webhooks (gateway/webhooks.py, docs/api.md): how long one attempt may take; how many attempts a
    # delivery gets before it is marked failed (a redelivery grants as many again); the backoff between
    # them (base * 2^(retry-1), capped, with jitter); how often each gateway process looks for due
    # deliveries (0: this process sends none); how many endpoints one tenant may register
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    webhook_backoff_base_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    webhook_poll_s: float = Field(default=1.0, ge=0)
    webhook_max_endpoints: int = Field(default=10, ge=1, le=1000)
    # after a secret's rotation, deliveries are signed with the previous secret too for this long by default
    # (a rotation may ask for another overlap, up to webhooks.MAX_OVERLAP_S), so receivers can switch over
    webhook_secret_overlap_s: float = Field(default=86400.0, ge=0, le=7 * 86400.0)
    # endpoints resolving to loopback, private or link-local addresses are refused (SSRF) unless allowed:
    # for tests and demos with local receivers, or a gateway whose receivers live on its private network
    webhook_allow_private: bool = False
    # delivered and failed deliveries (and their attempts) older than this are deleted by the maintenance sweep
    webhook_retention_s: float = Field(default=30 * 86400.0, gt=0)

    def schedule(self) -> SchedulePolicy:
        return SchedulePolicy(mean_interval_s=max(self.challenge_interval_s, 1e-6),
                              job_mean_interval_s=max(self.job_challenge_interval_s, 1e-6),
                              min_gap_s=self.challenge_min_gap_s, start_window_s=self.start_window_s)

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'gateway.db'}"

    @field_validator("log_origin")
    @classmethod
    def _origin_is_a_key_name(cls, value: str | None) -> str | None:
        if value is not None:
            from gpuproof.verifier.notes import NoteError, check_key_name

            try:
                check_key_name(value)
            except NoteError as exc:
                raise ValueError(str(exc)) from None
        return value

    def key_path(self) -> Path:
        return self.signing_key_path or self.data_dir / "gateway-signing.key"

    def test_shape(self, profile: str | None = None) -> tuple[int, int, int, int] | None:
        if not self.verify_test_shape:
            return None
        default, by_profile = None, {}
        for entry in self.verify_test_shape.split(";"):
            key, _, shape = entry.strip().rpartition("=")
            m, n, k, r = (int(v) for v in shape.split(","))
            if key:
                by_profile[key.strip()] = (m, n, k, r)
            else:
                default = (m, n, k, r)
        return by_profile.get(profile or "", default)
