"""What the command line's audiences share: the common options, the agent's settings, the gateway's URL and an
SDK client for it, and the one-line forms of a verdict. Imports no server code (tests/test_packages.py)."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from gpuproof.kernels.errors import ExtraMissing, InvalidParameter
from gpuproof.verifier.ids import ID_BYTES, is_hex

GatewayOpt = Annotated[str | None, typer.Option("--gateway", help="Gateway base URL (else the config file's).",
                                                envvar="GPUPROOF_GATEWAY")]
BackendOpt = Annotated[str, typer.Option("--backend", help="auto, cpu or cuda.", envvar="GPUPROOF_BACKEND")]
DeviceOpt = Annotated[int, typer.Option("--device", help="CUDA device index.", envvar="GPUPROOF_DEVICE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
JobIdArg = Annotated[str, typer.Option("--job", help="The job id (32 hex characters).")]
LogKeyOpt = Annotated[str | None, typer.Option(
    "--log-key", envvar="GPUPROOF_LOG_KEY",
    help="The log's key, known beforehand (not trusted on first use): its note verifier key "
         "(NAME+ID+BASE64, as GET /v1/log/head names in `verifier_key`) or its 64-hex public key.")]


SERVER_MODULES = ("fastapi", "fastapi_offline", "starlette", "uvicorn", "sqlalchemy", "alembic", "jinja2",
                  "prometheus_client", "httpcore", "psycopg")
"""The import names of the server extra's packages (pyproject.toml), which a provider's box may not have."""

SERVER_INSTALL = "pip install 'gpuproof[server]'"


def server_extra_missing(what: str, module: str) -> ExtraMissing:
    """The one-line error for a command that needs the server extra: `what` needs it, `module` is missing."""
    return ExtraMissing(f"{what} needs the server extra ({module} is not installed): {SERVER_INSTALL}")


def require_server(what: str) -> None:
    """Import the server extra's modules that every gateway loads, or raise ExtraMissing naming the first one
    missing and the install command. For a command that would otherwise fail later, elsewhere (the demo's
    gateway runs in a child process); the gateway's own commands import the server where they need it, and
    `main` turns a missing module there into the same line. psycopg is left out: only a PostgreSQL URL
    loads it."""
    for module in SERVER_MODULES:
        if module == "psycopg":
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise server_extra_missing(what, exc.name or module) from None


def agent_settings(**flags: Any):  # noqa: ANN202
    from gpuproof.agent.config import AgentSettings

    return AgentSettings(**{k: v for k, v in flags.items() if v is not None})


def gateway_url(gateway: str | None) -> str:
    url = gateway or agent_settings().gateway
    if not url:
        raise InvalidParameter("--gateway", "no gateway URL: pass --gateway URL, set GPUPROOF_GATEWAY, or run "
                               "`gpuproof agent register --gateway URL`")
    if not re.match(r"^https?://", url):
        raise InvalidParameter("--gateway", f"expected an http:// or https:// URL, got {url!r}")
    return url


def gateway_client(gateway: str | None, key=None, pinned_log_key: bytes | None = None):  # noqa: ANN001, ANN202
    from gpuproof.client import GatewayClient

    return GatewayClient(gateway_url(gateway), key=key, pinned_log_key=pinned_log_key, identity_check=known_gateways)


def known_gateways_path():  # noqa: ANN202
    from gpuproof.agent.config import config_dir

    return config_dir() / "known-gateways.json"


def known_gateways(url: str, identity) -> None:  # noqa: ANN001
    """Hold a gateway's identity (GET /v1/identity: the audience its request signatures name) to what this
    machine saw before, as ssh holds host keys: the first one seen for an address is kept; an address that
    later names another identity, or an identity already seen at another address, is refused. A gateway
    that named itself as another one could collect requests signed for that one and replay them there
    (docs/gateway.md, "Authentication"). If a gateway really moved or changed its identity, remove its
    entry from the file the message names."""
    store = known_gateways_path()
    known: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}  # address -> audience
    url = url.rstrip("/")
    if url in known:
        if known[url] != identity.audience:
            raise InvalidParameter("--gateway", f"the gateway at {url} names itself {identity.audience!r}, but it "
                                   f"was {known[url]!r} when this machine first used it: refusing to sign requests "
                                   f"for it (if its operator changed it, remove {url!r} from {store})")
        return
    elsewhere = [u for u, audience in known.items() if audience == identity.audience]
    if elsewhere:
        raise InvalidParameter("--gateway", f"the gateway at {url} names itself {identity.audience!r}, the identity "
                               f"of the gateway at {elsewhere[0]}: a gateway relaying requests signed for another "
                               f"would do this, so no request is signed for it (if that gateway moved to {url}, "
                               f"remove {elsewhere[0]!r} from {store})")
    known[url] = identity.audience
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_suffix(".part")
    partial.write_text(json.dumps(known, indent=1, sort_keys=True))
    partial.replace(store)


def log_heads_path():  # noqa: ANN202
    from gpuproof.agent.config import config_dir

    return config_dir() / "log-heads.json"


def pinned_log_key(gateway: str | None) -> bytes | None:
    """The log key pinned for this gateway by an earlier `gpuproof log verify`, if any."""
    store = log_heads_path()
    seen = json.loads(store.read_text()) if store.exists() else {}
    previous = seen.get(gateway_url(gateway).rstrip("/"))
    return bytes.fromhex(previous["public_key"]) if previous else None


@dataclass(frozen=True)
class LogKey:
    """A log key given up front (--log-key): its public key and, from a note verifier key, the log's origin."""

    public_key: bytes
    origin: str | None = None

    def check_origin(self, origin: str | None) -> None:
        """A head must be a checkpoint, of the log the verifier key names (its key name is the log's origin)."""
        from gpuproof.client import LogVerificationError

        if origin is None:  # a head of an earlier version: its signature covers no log name
            raise LogVerificationError("the gateway's tree head has no checkpoint: a log key given beforehand "
                                       "checks checkpoints only")
        if self.origin is not None and origin != self.origin:
            raise LogVerificationError(f"the gateway's checkpoint is of log {origin!r}, not {self.origin!r} that "
                                       "--log-key names")


def log_key(gateway: str | None, given: str | None) -> LogKey | None:
    """The log key to verify this gateway's heads with: the one given (--log-key), else the one pinned by an
    earlier `gpuproof log verify`, else None (the first head's key is trusted and pinned). A given key that
    differs from the pinned one is refused: one of them is not this gateway's log."""
    pinned = pinned_log_key(gateway)
    if given is None:
        return LogKey(pinned) if pinned is not None else None
    from gpuproof.verifier import notes

    text = given.strip()
    if is_hex(text, 32):
        key = LogKey(bytes.fromhex(text))
    else:
        try:
            origin, public = notes.parse_verifier_key(text)
        except notes.NoteError as exc:
            raise InvalidParameter("--log-key", f"expected a note verifier key NAME+ID+BASE64 or a 64-hex public "
                                   f"key: {exc}") from None
        key = LogKey(public, origin)
    if pinned is not None and pinned != key.public_key:
        raise InvalidParameter("--log-key", f"this gateway's log was verified before under key "
                               f"{pinned.hex()[:16]}..., not {key.public_key.hex()[:16]}...: if the gateway "
                               f"really changed its log key, remove its entry from {log_heads_path()}")
    return key


def check_job_id(job: str) -> str:
    if not is_hex(job, ID_BYTES):
        raise InvalidParameter("--job", "expected a job id of 32 hex characters")
    return job


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {text!r}") from None
    if len(dims) != 4:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {len(dims)}")
    return dims  # type: ignore[return-value]


def print_verdict(v: dict) -> None:
    print(f"verdict: {v['outcome'].upper()}  (correctness {v['correctness']}, timing {v['timing']})")
    print(f"challenge {v['challenge_id']}, claimed {v['claimed_profile']}, rate matches {v['best_match']}")
    for reason in v["reasons"]:
        print(f"  - {reason}")
    model = v["cheat_model"]
    print(f"  cheat pass probability <= {v['cheat_pass_probability']:.3g} "
          f"(worst case: {model.get('worst_case_substitute') or model['substitute']})")
