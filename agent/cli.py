"""The `gpuproof` command line (typer).

Every failure is one line on stderr: exit 2 for a bad parameter (naming it), 1 for any other gpuproof
error; never a traceback for bad input. `--json` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from typer.exceptions import Abort, Exit, TyperException

from kernels.backend import select_backend
from kernels.errors import BackendUnavailable, GpuproofError, InvalidParameter
from kernels.spec import SPEC, ChallengeParams, parse_seed

app = typer.Typer(
    name="gpuproof",
    help="gpuproof: exact int8 GPU challenges, Merkle commitments and trust scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
challenge_app = typer.Typer(help="Run and open gpuproof/1 challenges locally.", no_args_is_help=True)
app.add_typer(challenge_app, name="challenge")
gateway_app = typer.Typer(help="Run and administer the verifier gateway.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
api_key_app = typer.Typer(help="Marketplace API keys.", no_args_is_help=True)
gateway_app.add_typer(api_key_app, name="api-key")

DatabaseOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in the "
                                                 "data directory).", envvar="GPUPROOF_DATABASE_URL")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Where the gateway keeps its SQLite database "
                                                "and signing key.", envvar="GPUPROOF_DATA_DIR")]

SeedOpt = Annotated[str, typer.Option("--seed", help="32-byte seed as 64 hex characters.",
                                      envvar="GPUPROOF_SEED")]
MOpt = Annotated[int, typer.Option("--m", help="Rows of A_r and C_r.")]
NOpt = Annotated[int, typer.Option("--n", help="Rows of B (columns of C_r): 256 times a power of two.")]
KOpt = Annotated[int, typer.Option("--k", help="Inner dimension: a multiple of 64, at most 2**20.")]
RoundsOpt = Annotated[int, typer.Option("--rounds", help="Number of chained rounds R.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="auto, cpu or cuda.", envvar="GPUPROOF_BACKEND")]
DeviceOpt = Annotated[int, typer.Option("--device", help="CUDA device index.", envvar="GPUPROOF_DEVICE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


def _params(seed: str, m: int, n: int, k: int, rounds: int) -> ChallengeParams:
    return ChallengeParams(parse_seed(seed), m, n, k, rounds)


def _check_device(device: int) -> None:
    if device < 0:
        raise InvalidParameter("--device", f"must be a non-negative device index, got {device}")


@challenge_app.command("run")
def challenge_run(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt,
                  backend: BackendOpt = "auto", device: DeviceOpt = 0, as_json: JsonOpt = False) -> None:
    """Compute a challenge's commitment: the R chained round roots."""
    params = _params(seed, m, n, k, rounds)
    _check_device(device)
    engine = select_backend(backend, device)
    show_progress = not as_json and sys.stdout.isatty() and rounds > 1
    start = time.perf_counter()
    if show_progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"rounds ({engine.name})", total=rounds)
            roots = engine.run(params, progress=lambda done: bar.update(task, completed=done))
    else:
        roots = engine.run(params)
    seconds = time.perf_counter() - start
    if as_json:
        print(json.dumps({"spec": SPEC, "roots": [r.hex() for r in roots], "backend": engine.name,
                          "seconds": round(seconds, 6)}))
        return
    for i, root in enumerate(roots):
        print(f"{i}\t{root.hex()}")
    ops = params.operations_per_round * rounds
    print(f"# {SPEC} backend={engine.name} {seconds:.3f} s, {ops / seconds / 1e12:.4f} TOPS", file=sys.stderr)


@challenge_app.command("open")
def challenge_open(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt,
                   round_index: Annotated[int, typer.Option("--round", help="Round r to open.")],
                   row: Annotated[int, typer.Option("--row", help="Row i of C_r to open.")],
                   backend: BackendOpt = "auto", device: DeviceOpt = 0, as_json: JsonOpt = False) -> None:
    """Open one (round, row): its n int32 values and the audit path to root_r (recomputes rounds 0..r)."""
    params = _params(seed, m, n, k, rounds)
    _check_device(device)
    if not 0 <= round_index < rounds:
        raise InvalidParameter("--round", f"must be in 0..{rounds - 1}, got {round_index}")
    if not 0 <= row < m:
        raise InvalidParameter("--row", f"must be in 0..{m - 1}, got {row}")
    engine = select_backend(backend, device)
    values, path = engine.open(params, round_index, row)
    if as_json:
        print(json.dumps({"spec": SPEC, "round": round_index, "row": row,
                          "values": [int(v) for v in values], "path": [h.hex() for h in path],
                          "backend": engine.name}))
        return
    print(f"round {round_index} row {row}: {n} values")
    print(" ".join(str(int(v)) for v in values))
    print(f"path ({len(path)} hashes, leaf {row} of {m}):")
    for h in path:
        print(h.hex())


@challenge_app.command("local")
def challenge_local(
    device_model: Annotated[str, typer.Option("--device-model", help="The model claimed (any name; unknown "
                                              "models are judged unprofiled).", envvar="GPUPROOF_DEVICE_MODEL")]
    = "cpu-reference",
    shape: Annotated[str | None, typer.Option("--shape", help="m,n,k,rounds instead of the profile's sizing.")]
    = None,
    backend: BackendOpt = "auto", device: DeviceOpt = 0,
    transcript_out: Annotated[str | None, typer.Option("--transcript", help="Write the transcript here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Play the whole protocol locally: issue, prove, commit, open, judge, with real timing."""
    from kernels.backend import Opening
    from verifier import transcript
    from verifier.protocol import Verifier

    _check_device(device)
    dims = _parse_shape(shape) if shape else None
    engine = select_backend(backend, device)
    verifier = Verifier()
    challenge = verifier.issue(device_model, now=time.time(), shape=dims)
    roots = engine.run(challenge.params)
    commitment = verifier.commit(challenge, roots, received_at=time.time())
    request = verifier.request_openings(challenge, commitment)
    openings = []
    for r, i in sorted(set(request.pairs)):
        values, path = engine.open(challenge.params, r, i, roots)
        openings.append(Opening(r, i, values, tuple(path)))
    verdict = verifier.judge(challenge, commitment, request, openings)
    doc = transcript.build(challenge, commitment, request, openings, verdict)
    if transcript_out:
        _write_json(transcript_out, doc)
    if as_json:
        print(json.dumps(verdict.to_json()))
    else:
        _print_verdict(verdict.to_json())
    if verdict.outcome != "pass":
        raise typer.Exit(1)


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {text!r}") from None
    if len(dims) != 4:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {len(dims)}")
    return dims  # type: ignore[return-value]


def _write_json(path: str, doc: object) -> None:
    try:
        with open(path, "w") as fh:
            json.dump(doc, fh)
    except OSError as exc:
        raise InvalidParameter("--transcript", f"cannot write {path}: {exc.strerror}") from None


def _print_verdict(v: dict) -> None:
    print(f"verdict: {v['outcome'].upper()}  (correctness {v['correctness']}, timing {v['timing']})")
    print(f"challenge {v['challenge_id']}, claimed {v['claimed_profile']}, rate matches {v['best_match']}")
    for reason in v["reasons"]:
        print(f"  - {reason}")
    print(f"  cheat pass probability <= {v['cheat_pass_probability']:.3g} "
          f"(substitute {v['cheat_model']['substitute']})")


@app.command("verify-transcript")
def verify_transcript(
    file: Annotated[str, typer.Argument(help="A transcript JSON file (gpuproof.transcript/1).")],
    as_json: JsonOpt = False,
) -> None:
    """Re-run every check of a challenge transcript offline; exit 0 if the recorded verdict stands."""
    from verifier import transcript

    try:
        with open(file) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise InvalidParameter("FILE", f"cannot read {file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InvalidParameter("FILE", f"{file} is not JSON: {exc.msg} at line {exc.lineno}") from None
    verdict, diffs = transcript.recheck(doc)
    if as_json:
        print(json.dumps({"verdict": verdict.to_json(), "matches_record": not diffs, "differences": diffs}))
    else:
        _print_verdict(verdict.to_json())
        if diffs:
            print("the recorded verdict does NOT stand:")
            for d in diffs:
                print(f"  ! {d}")
        else:
            print("the recorded verdict stands: every check reproduced")
    if diffs:
        raise typer.Exit(1)


def _gateway_settings(database_url: str | None, data_dir: str | None):  # noqa: ANN202
    from gateway.settings import Settings

    overrides: dict = {}
    if database_url:
        overrides["database_url"] = database_url
    if data_dir:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


@gateway_app.command("serve")
def gateway_serve(host: Annotated[str, typer.Option("--host", envvar="GPUPROOF_HOST")] = "127.0.0.1",
                  port: Annotated[int, typer.Option("--port", envvar="GPUPROOF_PORT")] = 8080,
                  database_url: DatabaseOpt = None, data_dir: DataDirOpt = None,
                  workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.")] = 1) -> None:
    """Serve the gateway with uvicorn (migrations are applied first)."""
    import os

    import uvicorn

    if not 0 < port < 65536:
        raise InvalidParameter("--port", f"must be in 1..65535, got {port}")
    settings = _gateway_settings(database_url, data_dir)
    from gateway import migrate

    migrate.upgrade(settings.sqlalchemy_url())
    os.environ["GPUPROOF_DATABASE_URL"] = settings.sqlalchemy_url()
    os.environ["GPUPROOF_DATA_DIR"] = str(settings.data_dir)
    uvicorn.run("gateway.asgi:app", host=host, port=port, workers=workers, log_level="warning",
                access_log=False)


@gateway_app.command("migrate")
def gateway_migrate(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the database migrations up to the code's head."""
    from gateway import migrate

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    print(f"database at migration {migrate.head_revision(settings.sqlalchemy_url())}")


@api_key_app.command("create")
def api_key_create(name: Annotated[str, typer.Option("--name", help="Who the key is for.")],
                   scope: Annotated[list[str], typer.Option("--scope", help="jobs or settle (repeat for both).")],
                   database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Create a marketplace API key; the key is printed once and stored only as a hash."""
    from gateway import admin, migrate
    from gateway.db import Database

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    token = admin.create_api_key(Database(settings.sqlalchemy_url()), name, scope)
    print(token)
    print("# shown once: store it now; the gateway keeps only its hash", file=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"gpuproof: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every expected failure into one line and an exit code."""
    from verifier.transcript import TranscriptError

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
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return result if isinstance(result, int) else 0  # without standalone mode, Exit(n) comes back as n


if __name__ == "__main__":
    sys.exit(main())
