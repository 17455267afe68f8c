"""The `gpuproof` command line (typer), one module per audience:

- `challenge`  run and open challenges on this machine (cli/challenge.py)
- `agent`      the provider's box: key, registration, self-test, daemon, training (cli/provider.py)
- `trust`, `verify-transcript`, `log verify`, `replay`: renters, marketplaces, validators (cli/market.py)
- `gateway`    run and administer the gateway, the only one that loads the server (cli/admin.py)
- `demo`       the whole product on this machine, with the hidden `cheat` commands (cli/demo.py)

Every failure is one line on stderr: exit 2 for a bad parameter (naming it), 1 for any other gpuproof
error; never a traceback for bad input. `--json` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import functools
import sys

import typer
from gpuproof.cli import admin, challenge, demo, market, provider
from gpuproof.cli.common import SERVER_MODULES, require_server, server_extra_missing
from gpuproof.kernels.errors import BackendUnavailable, GpuproofError, InvalidParameter
from typer.exceptions import Abort, Exit, TyperException

app = typer.Typer(
    name="gpuproof",
    help="gpuproof: exact int8 GPU challenges, Merkle commitments and trust scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(challenge.app, name="challenge")
app.add_typer(admin.app, name="gateway")
app.add_typer(provider.app, name="agent")
app.add_typer(market.log_app, name="log")
app.command("verify-transcript")(market.verify_transcript)
app.command("trust")(market.trust_command)


@functools.wraps(demo.demo_command)  # the same options and help: typer reads them through __wrapped__
def _demo(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
    # The demo's gateway runs in a child process: without the server extra it would die there, after the
    # calibration, with a traceback in its log. Checked before anything starts instead.
    require_server("the demo (it runs a gateway)")
    demo.demo_command(*args, **kwargs)


app.command("demo")(_demo)
app.command("replay")(market.replay_command)
app.add_typer(demo.cheat_app, name="cheat", hidden=True)


def _fail(message: str, code: int) -> int:
    print(f"gpuproof: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every expected failure into one line and an exit code."""
    from gpuproof.verifier.transcript import TranscriptError

    try:
        result = app(args=argv, prog_name="gpuproof", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except Abort:
        return _fail("aborted", 130)
    except TyperException as exc:  # click's usage errors, vendored by typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())
            return 0
        return _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except (InvalidParameter, BackendUnavailable, TranscriptError) as exc:
        return _fail(str(exc), 2)
    except GpuproofError as exc:
        return _fail(str(exc), 1)
    except ModuleNotFoundError as exc:  # a gateway command on a box without the server extra
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        return _fail(str(server_extra_missing("the gateway", exc.name or "")), 1)
    except Exception as exc:  # a database or OS failure under a command: one line, not a traceback
        sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")  # loaded only by the gateway's commands (cli/admin.py)
        if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
            return _fail(f"database: {getattr(exc, 'orig', None) or exc}".splitlines()[0], 1)
        if isinstance(exc, OSError):
            return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), 1)
        raise
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return result if isinstance(result, int) else 0  # without standalone mode, Exit(n) comes back as n

