"""`gpuproof gateway`: run and administer the verifier gateway. The one audience that needs the server's
dependencies: every server module is imported inside the command that uses it, so the rest of the command line
(and a provider box without FastAPI or SQLAlchemy) never loads them (tests/test_packages.py)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from gpuproof.gateway import API_KEY_SCOPES  # the gateway package's __init__: a plain dict, free of imports
from gpuproof.kernels.errors import InvalidParameter

app = typer.Typer(help="Run and administer the verifier gateway.", no_args_is_help=True)
api_key_app = typer.Typer(help="Marketplace API keys.", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")

DatabaseOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in the "
                                                 "data directory).", envvar="GPUPROOF_DATABASE_URL")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Where the gateway keeps its SQLite database "
                                                "and signing key.", envvar="GPUPROOF_DATA_DIR")]


def _gateway_settings(database_url: str | None, data_dir: str | None):  # noqa: ANN202
    from gpuproof.gateway.settings import Settings

    overrides: dict = {}
    if database_url:
        overrides["database_url"] = database_url
    if data_dir:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


def serve_banner(host: str, port: int, settings) -> list[str]:  # noqa: ANN001
    """What `gateway serve` prints on start: where it listens, where the API docs and its data are (the
    database URL with any password masked)."""
    from sqlalchemy.engine import make_url

    everywhere = host in ("", "0.0.0.0", "::")
    shown = "127.0.0.1" if everywhere else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    return [f"gpuproof gateway listening on {base}/ (the dashboard)"
            + (f", bound to {host or '0.0.0.0'}: every interface" if everywhere else ""),
            f"  API docs  {base}/docs (ReDoc {base}/redoc, OpenAPI {base}/openapi.json)",
            f"  data dir  {settings.data_dir} (signing key {settings.key_path()})",
            f"  database  {make_url(settings.sqlalchemy_url()).render_as_string(hide_password=True)}",
            "  Ctrl-C stops it"]


@app.command("serve")
def gateway_serve(host: Annotated[str, typer.Option("--host", envvar="GPUPROOF_HOST")] = "127.0.0.1",
                  port: Annotated[int, typer.Option("--port", envvar="GPUPROOF_PORT")] = 8080,
                  database_url: DatabaseOpt = None, data_dir: DataDirOpt = None,
                  workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.")] = 1,
                  forwarded_allow_ips: Annotated[str, typer.Option(
                      "--forwarded-allow-ips", envvar="GPUPROOF_FORWARDED_ALLOW_IPS",
                      help="Comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For "
                           "(and X-Forwarded-Proto) to trust for the client's address, which per-source rate "
                           "limits count by. Default: none, the connection's own address is the client's "
                           "(uvicorn's own default trusts 127.0.0.1).")] = "") -> None:
    """Serve the gateway with uvicorn (migrations are applied first)."""
    import os

    import uvicorn

    if not 0 < port < 65536:
        raise InvalidParameter("--port", f"must be in 1..65535, got {port}")
    settings = _gateway_settings(database_url, data_dir)
    from gpuproof.gateway import migrate
    from gpuproof.gateway.app import gateway_profiles

    gateway_profiles(settings)  # a bad GPUPROOF_PROFILES_FILE: one line here, not a traceback from uvicorn
    migrate.upgrade(settings.sqlalchemy_url())
    os.environ["GPUPROOF_DATABASE_URL"] = settings.sqlalchemy_url()
    os.environ["GPUPROOF_DATA_DIR"] = str(settings.data_dir)
    print("\n".join(serve_banner(host, port, settings)), flush=True)
    uvicorn.run("gpuproof.gateway.asgi:app", host=host, port=port, workers=workers,
                **uvicorn_options(forwarded_allow_ips))


def uvicorn_options(forwarded_allow_ips: str) -> dict:
    """uvicorn.run's settings for the gateway besides the app, address and workers (`gateway serve`; the
    gateway benchmark serves its bare-ASGI baseline with the same, bench/gateway_bench.py)."""
    # X-Forwarded-For is trusted only from the named proxies; uvicorn's default would trust it from loopback,
    # where any local client (or a proxy that passes the header through) could claim any address (issue 18)
    proxies = forwarded_allow_ips.strip()
    return {"log_level": "warning", "access_log": False, "proxy_headers": bool(proxies),
            "forwarded_allow_ips": proxies or None}


@app.command("migrate")
def gateway_migrate(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the database migrations up to the code's head."""
    from gpuproof.gateway import migrate

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    print(f"database at migration {migrate.head_revision(settings.sqlalchemy_url())}")


@app.command("openapi")
def gateway_openapi(out: Annotated[str | None, typer.Option("--out", help="Write it here (default: stdout).")]
                    = None) -> None:
    """Print the gateway's OpenAPI document (every route, request and response model), as docs/openapi.json
    holds it: canonical JSON, keys sorted. Nothing is served or stored: the app is built on a throw-away
    database."""
    import json
    import tempfile
    from pathlib import Path

    from gpuproof.gateway.app import openapi_document

    with tempfile.TemporaryDirectory() as tmp:
        text = openapi_document(Path(tmp))
    if out is None:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise InvalidParameter("--out", f"cannot write {out}: {exc.strerror}") from None
    print(f"wrote {out} ({len(json.loads(text)['paths'])} paths)")


@api_key_app.command("create")
def api_key_create(name: Annotated[str, typer.Option("--name", help="Who the key is for.")],
                   scope: Annotated[list[str], typer.Option("--scope", help="What the key may do (repeat for "
                                                            "several): " + ", ".join(
                                                                f"{k} ({v})" for k, v in API_KEY_SCOPES.items()))],
                   tenant: Annotated[str | None, typer.Option("--tenant", help="The marketplace the key acts "
                                                              "for (default: the name); a key sees only its "
                                                              "tenant's jobs and validators.")] = None,
                   database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Create a marketplace API key; the key is printed once and stored only as a hash."""
    from gpuproof.gateway import admin, migrate
    from gpuproof.gateway.db import Database

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    token = admin.create_api_key(Database(settings.sqlalchemy_url()), name, scope, tenant)
    print(token)
    print("# shown once: store it now; the gateway keeps only its hash", file=sys.stderr)
