"""`gpuproof challenge`: compute, open and play gpuproof/1 and gpuproof/2 challenges on this machine (no gateway)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Annotated

import typer
from gpuproof.cli.common import BackendOpt, DeviceOpt, JsonOpt, parse_shape, print_verdict
from gpuproof.kernels.backend import select_backend
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.kernels.spec import SPEC, ChallengeParams, definition, parse_seed, parse_spec
from gpuproof.verifier.timing import format_rate

app = typer.Typer(help="Run and open gpuproof/1 and gpuproof/2 challenges locally.", no_args_is_help=True)

SeedOpt = Annotated[str, typer.Option("--seed", help="32-byte seed as 64 hex characters.",
                                      envvar="GPUPROOF_SEED")]
MOpt = Annotated[int, typer.Option("--m", help="Rows of A_r and C_r.")]
NOpt = Annotated[int, typer.Option("--n", help="Rows of B (columns of C_r): 256 times a power of two.")]
KOpt = Annotated[int, typer.Option("--k", help="Inner dimension: a multiple of 64, at most 131008 in spec 2 "
                                            "(2**20 in spec 1).")]
RoundsOpt = Annotated[int, typer.Option("--rounds", help="Number of chained rounds R.")]
SpecOpt = Annotated[str, typer.Option("--spec", help="Challenge spec: 2 (gpuproof/2, full-range int8, the default "
                                      "for new challenges) or 1 (gpuproof/1, nibbles).", envvar="GPUPROOF_SPEC")]
DEFAULT_SPEC = str(definition(SPEC).version)
LOCAL_CPU_ROUNDS = 2


def _params(seed: str, m: int, n: int, k: int, rounds: int, spec: str) -> ChallengeParams:
    return ChallengeParams(parse_seed(seed), m, n, k, rounds, parse_spec(spec))


def _check_device(device: int) -> None:
    if device < 0:
        raise InvalidParameter("--device", f"must be a non-negative device index, got {device}")


@app.command("run")
def challenge_run(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt, spec: SpecOpt = DEFAULT_SPEC,
                  backend: BackendOpt = "auto", device: DeviceOpt = 0, as_json: JsonOpt = False) -> None:
    """Compute a challenge's commitment: the R chained round roots."""
    params = _params(seed, m, n, k, rounds, spec)
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
        print(json.dumps({"spec": params.spec, "roots": [r.hex() for r in roots], "backend": engine.name,
                          "seconds": round(seconds, 6)}))
        return
    for i, root in enumerate(roots):
        print(f"{i}\t{root.hex()}")
    ops = params.operations_per_round * rounds
    print(f"# {params.spec} backend={engine.name} {seconds:.3f} s, {format_rate(ops / seconds)}", file=sys.stderr)


@app.command("open")
def challenge_open(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt,
                   round_index: Annotated[int, typer.Option("--round", help="Round r to open.")],
                   row: Annotated[int, typer.Option("--row", help="Row i of C_r to open.")],
                   spec: SpecOpt = DEFAULT_SPEC, backend: BackendOpt = "auto", device: DeviceOpt = 0,
                   as_json: JsonOpt = False) -> None:
    """Open one (round, row): its n int32 values and the audit path to root_r (recomputes rounds 0..r)."""
    params = _params(seed, m, n, k, rounds, spec)
    _check_device(device)
    if not 0 <= round_index < rounds:
        raise InvalidParameter("--round", f"must be in 0..{rounds - 1}, got {round_index}")
    if not 0 <= row < m:
        raise InvalidParameter("--row", f"must be in 0..{m - 1}, got {row}")
    engine = select_backend(backend, device)
    values, path = engine.open(params, round_index, row)
    if as_json:
        print(json.dumps({"spec": params.spec, "round": round_index, "row": row,
                          "values": [int(v) for v in values], "path": [h.hex() for h in path],
                          "backend": engine.name}))
        return
    print(f"round {round_index} row {row}: {n} values")
    print(" ".join(str(int(v)) for v in values))
    print(f"path ({len(path)} hashes, leaf {row} of {m}):")
    for h in path:
        print(h.hex())


@app.command("local")
def challenge_local(
    device_model: Annotated[str, typer.Option("--device-model", help="The model claimed (any name; unknown "
                                              "models are judged unprofiled).", envvar="GPUPROOF_DEVICE_MODEL")]
    = "cpu-reference",
    shape: Annotated[str | None, typer.Option("--shape", help="m,n,k,rounds instead of the profile's sizing.")]
    = None,
    spec: SpecOpt = DEFAULT_SPEC,
    backend: BackendOpt = "auto", device: DeviceOpt = 0,
    transcript_out: Annotated[str | None, typer.Option("--transcript", help="Write the transcript here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Play the whole protocol locally: issue, prove, commit, open, judge, with real timing.

    On the CPU backend a claimed GPU's full sizing (8192 x 8192 x 32768, hundreds of rounds on an H200)
    would take days: without --shape the challenge is played at the cpu-reference shape with
    LOCAL_CPU_ROUNDS rounds instead (said on stderr), judged against the claimed model's thresholds.
    """
    from gpuproof.kernels.backend import Opening
    from gpuproof.verifier import transcript
    from gpuproof.verifier.profiles import lookup
    from gpuproof.verifier.protocol import Verifier
    from gpuproof.verifier.timing import challenge_shape

    _check_device(device)
    version = parse_spec(spec)
    dims = parse_shape(shape) if shape else None
    engine = select_backend(backend, device)
    verifier = Verifier()
    if dims is None and engine.name == "cpu":
        small = challenge_shape(verifier.profiles["cpu-reference"])
        if challenge_shape(lookup(device_model, verifier.profiles)) != small:
            dims = (*small, LOCAL_CPU_ROUNDS)
            print(f"gpuproof: the cpu backend plays {device_model}'s challenge at the small shape "
                  f"{','.join(map(str, dims))} (m,n,k,rounds); --shape sets another", file=sys.stderr)
    challenge = verifier.issue(device_model, now=time.time(), shape=dims, spec=version)
    # The compute phase is judged here as the gateway judges it; the memory phase is played after it and
    # shown (`_memory_phase`): its lanes decide the exit status, its walk time at a toy size is not judged.
    challenge = dataclasses.replace(challenge, memory=None)
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
    finding = _memory_phase(verifier, challenge, roots)
    if as_json:
        print(json.dumps(verdict.to_json() | ({"memory": finding.to_json()} if finding else {})))
    else:
        print_verdict(verdict.to_json())
        if finding is not None:
            lanes = "verified" if finding.failure is None else f"FAILED ({finding.failure})"
            print(f"memory phase (spec v2): opened lanes {lanes} against the committed roots; walk "
                  f"{finding.walk_class}, capacity {finding.capacity}, bandwidth class {finding.bandwidth_class}")
            for reason in finding.reasons:
                print(f"  - {reason}")
    if verdict.outcome != "pass" or (finding is not None and finding.failure is not None):
        raise typer.Exit(1)


def _memory_phase(verifier, challenge, roots):  # noqa: ANN001, ANN202
    """Spec v2's memory phase played locally after the compute phase (kernels.memory.play_local) and judged
    (verifier.memory.judge_memory); None for a v1 challenge or an unprofiled claim (no memory to prove).

    The lanes' check is exact and decides the exit status; the walk's timing on a CPU at a small size says
    nothing about a GPU (as the compute phase's does not), so it is shown, not judged here."""
    from gpuproof.kernels import memory as km
    from gpuproof.kernels.spec import definition
    from gpuproof.verifier import memory as vm

    profile = verifier.profile_of(challenge)
    if definition(challenge.params.spec).version < 2 or not profile.memory_gib:
        return None
    plan = vm.plan_memory(challenge.params, profile)
    started = time.perf_counter()
    play = km.play_local(plan)
    walk_s = time.perf_counter() - started  # rounds, table and walk: an upper bound on the walk alone
    if play.roots != list(roots):
        raise InvalidParameter("--backend", "the memory phase's rounds differ from the compute phase's roots")
    return vm.judge_memory(plan, profile, play.roots, play.nonce, play.walk_root, play.drawn, play.openings, walk_s)


def _write_json(path: str, doc: object) -> None:
    try:
        with open(path, "w") as fh:
            json.dump(doc, fh)
    except OSError as exc:
        raise InvalidParameter("--transcript", f"cannot write {path}: {exc.strerror}") from None
