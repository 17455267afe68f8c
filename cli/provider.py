"""`gpuproof agent`: what a provider runs on its GPU box: its key, its registration, a self-test, the daemon
that answers challenges, the reference training job, its status. Imports no server code and no simulator of
cheating (tests/test_packages.py): the demo's dishonest providers reuse `serve` and `train` with their own
backend or run (gpuproof.cli.demo)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from gpuproof.cli.common import (
    BackendOpt,
    GatewayOpt,
    JobIdArg,
    JsonOpt,
    agent_settings,
    check_job_id,
    gateway_client,
    parse_shape,
)
from gpuproof.kernels.errors import BackendUnavailable, InvalidParameter
from gpuproof.verifier.timing import format_rate

app = typer.Typer(help="The provider agent: key, registration, self-test, daemon, status.", no_args_is_help=True)

@app.command("init")
def agent_init(force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
               gateway: GatewayOpt = None) -> None:
    """Make the provider's Ed25519 key (mode 0600) and config file; print the public key."""
    from gpuproof.agent import config, keys
    from gpuproof.verifier import signatures

    settings = agent_settings()
    path = settings.resolved_key_path()
    key = keys.create(path, force=force)
    config.save({"key_path": str(path), "gateway": gateway})
    public = signatures.public_key_bytes(key)
    print(f"public key {public.hex()}")
    print(f"provider id {signatures.provider_id(public)}")
    print(f"# key in {path} (0600), config in {config.config_file()}", file=sys.stderr)


@app.command("register")
def agent_register(gateway: GatewayOpt = None,
                   name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
                   gpu: Annotated[str | None, typer.Option("--gpu", help="Model to claim when none is detected "
                                                           "(cpu-reference for the CPU backend).")] = None,
                   count: Annotated[int, typer.Option("--count", help="How many such cards (with --gpu): "
                                                      "each is registered as its own device.")] = 1,
                   vram: Annotated[float, typer.Option("--vram", help="GiB per device.")] = 8.0,
                   update: Annotated[bool, typer.Option("--update", help="Change this key's registration (name and "
                                                        "devices) instead of making one: a request signed by the "
                                                        "key.")] = False) -> None:
    """Detect the GPUs, show the claim, and register this provider with the gateway (--update: change the
    registration this key already has)."""
    from gpuproof.agent import config, keys
    from gpuproof.agent.config import DeviceSpec
    from gpuproof.agent.detect import detect
    from gpuproof.verifier.profiles import lookup

    settings = agent_settings(gateway=gateway, name=name)
    key = keys.load(settings.resolved_key_path())
    if count < 1:
        raise InvalidParameter("--count", f"must be at least 1, got {count}")
    if count > 64:
        raise InvalidParameter("--count", f"must be at most 64, got {count}")
    # one device per physical card: the gateway challenges them all at the same instant
    devices = [DeviceSpec(model=gpu, count=1, vram_gib=vram, cuda_index=i) for i in range(count)] if gpu else detect()
    if not devices:
        raise BackendUnavailable("no GPU found: pass --gpu MODEL --count N, or --gpu cpu-reference to serve with "
                                 "the CPU backend")
    for i, d in enumerate(devices):
        profile = lookup(d.model)
        print(f"device {i}: {d.count} x {d.model}, {d.vram_gib:g} GiB -> profile {profile.key}")
    with gateway_client(settings.gateway, key) as client:
        _wait_for(client, seconds=30)
        claims = [d.model_dump(exclude={"cuda_index"}) for d in devices]
        out = client.update_registration(settings.name, claims) if update else client.register(settings.name, claims)
    config.save({"gateway": client.base_url, "name": settings.name,
                 "devices": [d.model_dump() for d in devices]})
    print(f"{'updated' if update else 'registered'} provider {out.id} ({out.name}) with {client.base_url}")


def _wait_for(client, seconds: float) -> None:  # noqa: ANN001
    """Give a gateway that is still starting (connection refused) a few seconds before giving up."""
    from gpuproof.client import GatewayUnreachable

    deadline = time.monotonic() + seconds
    while True:
        try:
            client.providers(limit=1)
            return
        except GatewayUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def backend_for(backend: str):  # noqa: ANN202
    from gpuproof.kernels.backend import select_backend

    return lambda device: select_backend(backend, device.cuda_index)


@app.command("selftest")
def agent_selftest(shape: Annotated[str | None, typer.Option("--shape", help="m,n,k,rounds instead of the "
                                                             "profile's sizing.")] = None,
                   backend: BackendOpt = "auto", as_json: JsonOpt = False) -> None:
    """Run a standard challenge per claimed device here and say whether it would pass, with the margin.

    Each backend is warmed up first (kernels, handles, buffers, one untimed round), as `agent run` does,
    so the timed challenge is what the gateway would time."""
    from gpuproof.agent.detect import detect
    from gpuproof.verifier.outcome import Correctness, passed
    from gpuproof.verifier.protocol import Verifier
    from gpuproof.verifier.timing import classify

    settings = agent_settings(backend=backend)
    devices = settings.devices or detect()
    if not devices:
        raise BackendUnavailable("no devices: register first, or pass --gpu at registration (cpu-reference for "
                                 "the CPU backend)")
    dims = parse_shape(shape) if shape else None
    verifier = Verifier()
    results = []
    for i, d in enumerate(devices):
        engine = backend_for(settings.backend)(d)
        challenge = verifier.issue(d.model, now=time.time(), shape=dims)
        p = challenge.params
        engine.warm_up([(p.m, p.n, p.k)])  # as `agent run` does before its first poll: time no warm-up
        started = time.perf_counter()
        engine.run(p)
        seconds = time.perf_counter() - started
        rate = p.operations / seconds
        cls = classify(seconds, challenge.thresholds, verifier.profile_of(challenge))
        margin = challenge.thresholds.slow_s / seconds - 1
        results.append({"device": i, "model": d.model, "profile": challenge.profile, "backend": engine.name,
                        "seconds": round(seconds, 4), "tops": rate / 1e12, "timing": cls,
                        "slow_limit_s": challenge.thresholds.slow_s, "margin": margin,
                        "would_pass": passed(Correctness.PASS, cls)})
    if as_json:
        print(json.dumps(results))
    else:
        for r in results:
            verdict = "would PASS" if r["would_pass"] else "would FAIL"
            print(f"device {r['device']} ({r['model']}, profile {r['profile']}, backend {r['backend']}): "
                  f"{r['seconds']:.3f} s, {format_rate(r['tops'] * 1e12)}, {r['timing']}: {verdict}, "
                  f"{r['margin']:+.0%} margin to the {r['slow_limit_s']:.3f} s limit")
    if not all(r["would_pass"] for r in results):
        raise typer.Exit(1)


MaxChallengesOpt = Annotated[int | None, typer.Option("--max-challenges", help="Stop after this many verdicts.")]


@app.command("run")
def agent_run(gateway: GatewayOpt = None, backend: BackendOpt = "auto", max_challenges: MaxChallengesOpt = None,
              as_json: JsonOpt = False) -> None:
    """The provider daemon: answer challenges for every registered device until stopped."""
    serve(gateway, backend, max_challenges, as_json)


def serve(gateway: str | None, backend: str, max_challenges: int | None, as_json: bool,
          engine_for: Callable[[Any], Any] | None = None) -> None:
    """`agent run`: the daemon over the registered devices, until stopped (SIGTERM, SIGINT) or `max_challenges`
    verdicts. `engine_for(device)` chooses each device's compute backend (default: `--backend`'s)."""
    import signal

    from gpuproof.agent import keys
    from gpuproof.agent.daemon import Daemon, json_emitter

    settings = agent_settings(gateway=gateway, backend=backend)
    if not settings.devices:
        raise InvalidParameter("devices", "no registered devices in the config: run `gpuproof agent register`")
    key = keys.load(settings.resolved_key_path())
    with gateway_client(settings.gateway, key) as client:
        daemon = Daemon(client, settings.devices, engine_for or backend_for(settings.backend),
                        poll_max_s=settings.poll_max_s, max_challenges=max_challenges, emit=json_emitter())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: daemon.stop.set())
        if sys.stdout.isatty() and not as_json:
            _run_live(daemon)
        else:
            daemon.run()


def _run_live(daemon) -> None:  # noqa: ANN001
    import threading

    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        t = Table(title=f"gpuproof agent -> {daemon.client.base_url}")
        for col in ("device", "model", "state", "challenges", "passed", "last verdict", "reason"):
            t.add_column(col)
        now = time.time()
        for s in daemon.status:
            t.add_row(str(s.position), s.model, s.describe_state(now), str(s.challenges), str(s.passed),
                      s.last_verdict, s.last_reason[:60])
        return t

    daemon.emit = lambda event: None
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    with Live(table(), refresh_per_second=4) as live:
        while runner.is_alive():
            live.update(table())
            runner.join(timeout=0.25)


StepsOpt = Annotated[int, typer.Option("--steps", help="Training steps (a multiple of the policy's interval).")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="Where checkpoints are kept (default: the config "
                                              "directory).")]
StepDelayOpt = Annotated[float, typer.Option("--step-delay", help="Seconds added per step, standing in for a real "
                                             "accelerator's step time.")]


@app.command("train")
def agent_train(job: JobIdArg, steps: StepsOpt = 40, gateway: GatewayOpt = None, store: StoreOpt = None,
                step_delay: StepDelayOpt = 0.0, as_json: JsonOpt = False) -> None:
    """Run the reference training job (the MLP of verifier/workload.py) for a job with a checkpoint policy:
    commit every interval, close the run, answer the drawn audits. A renter's own loop uses
    agent.checkpointing.CheckpointCommitter and agent.training.TrainingReporter the same way."""
    train(job, steps, gateway, store, step_delay, as_json)


def train(job: str, steps: int, gateway: str | None, store: str | None, step_delay: float, as_json: bool,
          run: Any = None) -> None:
    """`agent train`: the reference job trained and reported as `run` (an agent.training.TrainingRun;
    default the honest one) says, then its report printed."""
    from pathlib import Path

    from gpuproof.agent import keys
    from gpuproof.agent.config import config_dir
    from gpuproof.agent.training import run_reference_job

    check_job_id(job)
    key = keys.load(agent_settings().resolved_key_path())
    with gateway_client(gateway, key) as client:
        policy = client.training(job)["policy"]
        where = Path(store) if store else config_dir() / "checkpoints" / job
        report = run_reference_job(client, job, policy, where, steps, step_delay, run,
                                   on_event=lambda kind, data: print(json.dumps({"event": kind, **data}),
                                                                     file=sys.stderr) if as_json else None)
    if as_json:
        print(json.dumps(report))
        return
    print(f"job {job}: run closed, {len(report['commitments'])} commitments"
          + (f", flagged: {'; '.join(report['flags'])}" if report["flags"] else ""))
    for a in report["audits"]:
        print(f"  segment {a['start_step']}->{a['end_step']}: {a['state']}"
              + (f" ({a['outcome']}: {a['verdict']['reason']})" if a["outcome"] else " (evidence sent)"))


@app.command("whoami")
def agent_whoami(public_key: Annotated[bool, typer.Option("--public-key", help="Print the Ed25519 public key "
                                                          "(hex) instead: what a marketplace registers to name "
                                                          "this machine as a validator.")] = False) -> None:
    """Print this provider's id (from its key)."""
    from gpuproof.agent import keys
    from gpuproof.verifier import signatures

    key = keys.load(agent_settings().resolved_key_path())
    public = signatures.public_key_bytes(key)
    print(public.hex() if public_key else signatures.provider_id(public))


@app.command("status")
def agent_status(gateway: GatewayOpt = None, as_json: JsonOpt = False) -> None:
    """This provider's score, verified class and last verdicts, from the gateway."""
    from gpuproof.agent import keys
    from gpuproof.verifier import signatures

    settings = agent_settings(gateway=gateway)
    key = keys.load(settings.resolved_key_path())
    pid = signatures.provider_id(signatures.public_key_bytes(key))
    with gateway_client(settings.gateway, key) as client:
        trust, recent = client.trust(pid), client.verdicts(pid, limit=5)
    if as_json:
        print(json.dumps({"provider_id": pid, "trust": trust.model_dump(mode="json"),
                          "verdicts": recent.model_dump(mode="json")["items"]}))
        return
    print(f"provider {pid}: {trust.status}, score {trust.score:.3f} (lower bound {trust.lower_bound:.3f}), "
          f"{trust.evidence} verdicts, verified class {trust.verified_class or '-'}")
    for item in recent.items:
        v = item.verdict
        print(f"  {item.challenge_id[:12]} {v.outcome:4} {v.timing:20} {v.reasons[0]}")
