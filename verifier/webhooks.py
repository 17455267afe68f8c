"""Webhooks for marketplaces (docs/api.md, "Receive webhooks"): the Standard Webhooks signature, the retry
schedule, the endpoint URL rule and the event payloads. Pure: strings, bytes and numbers in and out; the
gateway stores, sends and retries (gateway/webhooks.py).

Standard Webhooks (https://www.standardwebhooks.com, spec "Signature scheme"): a delivery carries
``webhook-id`` (the same on every attempt of one event to one endpoint, so a receiver drops repeats),
``webhook-timestamp`` (integer seconds, the attempt's time) and ``webhook-signature`` =
``v1,`` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), where the key is the
base64-decoded part of the endpoint's secret ``whsec_<base64>`` and the body is the exact bytes sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gpuproof.kernels.errors import GpuproofError

VERDICT = "verdict"
SETTLEMENT = "settlement"
TRUST = "trust"
EVENT_TYPES = (VERDICT, SETTLEMENT, TRUST)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 bytes
MAX_URL_LENGTH = 2000
TOLERANCE_S = 300  # a receiver refuses a timestamp further than this from its clock (the spec's 5 minutes)


MAX_OVERLAP_S = 7 * 86400.0  # the longest a rotated secret may keep signing deliveries


class WebhookError(GpuproofError):
    """A webhook secret, URL, signature or event that is not valid; the message says what was expected."""


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` + base64 of 32 random bytes (shown to the tenant once)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret: its base64 part decoded (the prefix is optional, as in
    the spec's reference libraries)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError(f"secret: expected {SECRET_PREFIX}<base64>, got {len(secret)} characters that are not "
                           "base64") from None
    if not key:
        raise WebhookError("secret: the key is empty")
    return key


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What is signed: ``{webhook-id}.{webhook-timestamp}.{body}`` (the body's exact bytes)."""
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64(HMAC-SHA256(key, signed_content))."""
    mac = hmac.new(secret_key(secret), signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str | Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt; with several secrets (a rotation's new and
    previous), one ``v1,`` signature by each, space-separated, so a receiver holding either verifies it."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise WebhookError("a delivery is signed with at least one secret")
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(k, msg_id, timestamp, body) for k in keys)}


def verify(secret: str, received: Mapping[str, str], body: bytes, now: float, tolerance_s: float = TOLERANCE_S) -> str:
    """What a receiver does: check the timestamp is within `tolerance_s` of `now` and that one of the
    space-separated ``v1,`` signatures matches (constant-time). Returns the webhook-id; WebhookError if not."""
    lower = {k.lower(): v for k, v in received.items()}
    msg_id, stamp, signature = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not msg_id or not stamp or not signature:
        raise WebhookError("expected the headers webhook-id, webhook-timestamp and webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookError(f"webhook-timestamp: expected integer seconds, got {stamp!r}") from None
    if abs(now - timestamp) > tolerance_s:
        raise WebhookError(f"webhook-timestamp is {timestamp - now:+.0f} s from now; the tolerance is "
                           f"+-{tolerance_s:g} s")
    expected = sign(secret, msg_id, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, s.encode()) for s in signature.split(" ") if s.startswith("v1,")):
        raise WebhookError("webhook-signature: no v1 signature matches the body")
    return msg_id


def retry_delay(retry: int, base_s: float, max_s: float, draw: float) -> float:
    """Seconds before retry number `retry` (1 = the first retry): exponential backoff, base_s * 2^(retry-1)
    capped at max_s, with "equal jitter" (half fixed, half drawn: `draw` is uniform in [0, 1)), so that
    the endpoints of one outage do not all come back in step."""
    if retry < 1:
        raise WebhookError(f"retry: expected 1 or more, got {retry}")
    step = min(max_s, base_s * 2 ** min(retry - 1, 62))
    return step / 2 + step / 2 * draw


def check_url(url: str) -> str:
    """An endpoint URL as stored: http or https, a host, no user:password, at most MAX_URL_LENGTH
    characters, no spaces or control characters. WebhookError says which rule failed."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise WebhookError(f"url: expected 1 to {MAX_URL_LENGTH} characters, got {len(url)}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise WebhookError("url: spaces and control characters are not allowed")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise WebhookError(f"url: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(f"url: expected an http or https URL, got the scheme {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise WebhookError("url: expected a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url: credentials in the URL are not allowed (the signature authenticates us)")
    if parts.fragment:
        raise WebhookError("url: a fragment (#...) is never sent; leave it out")
    return url


def refused_address(address: str) -> str | None:
    """Why a webhook may not be sent to this IP address, or None when it may: only globally routable
    addresses are allowed (no loopback, private, link-local, multicast, reserved or unspecified one, nor an
    IPv6 form of such an IPv4 address), so an endpoint cannot aim the gateway at its own network (SSRF)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:  # fec0::/10: deprecated, but routed to the site where a host still uses it
            return f"{ip}, a site-local address"
        # an IPv6 form that carries an IPv4 address (mapped, 6to4, Teredo's client) is judged by that address
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            if (why := refused_address(str(inner))) is not None:
                return f"{ip} ({why})"
            ip = inner
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip}, a {kind.replace('_', '-')} address"
    return None if ip.is_global else f"{ip}, not a public address"


def canonical(payload: Any) -> bytes:
    """Compact JSON with sorted keys, ASCII only (the bytes sent and signed)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def iso_time(at: float) -> str:
    """RFC 3339 UTC with milliseconds, as Standard Webhooks payloads carry their `timestamp`."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event as delivered: ``{"type", "timestamp", "data"}`` (the Standard Webhooks payload shape).
    `at` is when it happened (unix seconds); `data` the type's fields (docs/api.md lists them)."""

    type: str
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise WebhookError(f"event type: expected one of {', '.join(EVENT_TYPES)}, got {self.type!r}")

    def body(self) -> bytes:
        return canonical({"type": self.type, "timestamp": iso_time(self.at), "data": dict(self.data)})


def verdict_event(provider_id: str, subject: str, subject_id: str, verdict: Mapping[str, Any], outcome: str,
                  jobs: Sequence[str], at: float) -> Event:
    """A verdict on a provider: `subject` "challenge" (a hardware challenge, `subject_id` its id) or "segment"
    (a training segment's replay, the audit's id); `verdict` as the log stores it; `jobs` the receiving
    tenant's open jobs bound to the provider."""
    return Event(VERDICT, at, {"provider_id": provider_id, "subject": subject, "id": subject_id,
                               "outcome": outcome, "verdict": dict(verdict), "jobs": sorted(jobs)})


def settlement_event(job_id: str, provider_id: str, decision: str, reasons: Sequence[str], final: bool,
                     renter_commitment: str | None, at: float) -> Event:
    """A changed settlement decision of the tenant's job (the same fields as its log entry)."""
    return Event(SETTLEMENT, at, {"job_id": job_id, "provider_id": provider_id, "decision": decision,
                                  "reasons": list(reasons), "final": final, "renter_commitment": renter_commitment})


def trust_event(provider_id: str, previous: str, status: str, score: float, lower_bound: float,
                reasons: Sequence[str], jobs: Sequence[str], at: float) -> Event:
    """A provider's trust status changed (unproven, trusted, suspect) from `previous`."""
    return Event(TRUST, at, {"provider_id": provider_id, "previous_status": previous, "status": status,
                             "score": score, "lower_bound": lower_bound, "reasons": list(reasons),
                             "jobs": sorted(jobs)})
