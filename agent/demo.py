"""`gpuproof demo`: the whole product on this machine, honestly, in about a minute.

An embedded gateway (uvicorn, SQLite in a temporary directory, loopback only) and provider agents as
separate processes over real HTTP, each with its own key and config directory:

  honest        serves challenges with the local backend (CUDA when there is a GPU, else cpu-reference),
                and runs a training job honestly
  overclaimer   claims an NVIDIA H100 and computes on the CPU: its timing gives it away
  row-skipper   commits to C_r with a quarter of the rows never computed (agent/adversaries.py)
  replayer      commits an old challenge's roots to every new challenge
  lazy-trainer  a training job whose checkpoints are interpolated instead of trained

A marketplace key creates one job per provider; a validator (its own key, scope `replay`) replays the
training segments the gateway draws (`gpuproof replay`). A live table shows each provider's claimed and
verified class, score with its lower bound, and last verdict; then a summary and the settlement
decisions. Exit 0 only if every cheat was caught and every honest provider passed. `--serve` keeps the
gateway and its dashboard up afterwards. Ctrl-C stops every process; nothing is left outside the
temporary directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kernels.errors import GpuproofError

# m, n, k, R: a challenge of ~0.1 s on a CPU, every 2 s per device (an honest CPU's limit is ~2 s: room
# for a loaded machine); an H100 claim gets one that an H100 finishes in ~50 us and a CPU in ~0.8 s, past
# the slowest honest H100's limit (~0.33 s) even after the largest round-trip allowance (0.2 s) that a
# provider echoing its probes late can get (with R=8, 0.5 s, it passed 2 of 27 times on a loaded machine).
TEST_SHAPE = "128,2048,2048,4;h100-sxm=256,2048,4096,12"
TRAINING = {"interval": 10, "segments": 2, "chunks": 8, "mode": "exact", "min_step_s": 0.01,
            "workload": {"name": "mlp", "params": {"seed": 11, "hidden": 32}}}
TRAIN_STEPS, TRAIN_STEP_S = 120, 0.025  # a 3 s training run (the stand-in step is tiny; 25 ms stands in)


@dataclass
class Role:
    key: str
    name: str
    expect: str  # "honest" or the cheat it should be caught at
    claim: str | None = None  # the model it registers; None: the local GPU or cpu-reference
    adversary: str | None = None
    serves: bool = True  # runs the challenge daemon
    trains: str | None = None  # None: no training job; "honest" or a cheat of agent.training.CHEATS
    config: Path = field(default_factory=Path)
    provider_id: str = ""
    job_id: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)


ROLES = [
    Role("honest", "honest-box", "honest", trains="honest"),
    Role("overclaimer", "claims-an-h100", "slower than the claimed card", claim="NVIDIA H100"),
    Role("row-skipper", "skips-rows", "wrong rows", claim="cpu-reference", adversary="skip-rows"),
    Role("replayer", "replays-old-roots", "replayed commitment", claim="cpu-reference", adversary="replay-old"),
    Role("lazy-trainer", "lazy-trainer", "interpolated checkpoints", claim="cpu-reference", serves=False,
         trains="interpolate"),
]


class Demo:
    def __init__(self, duration: float, port: int, console: Console, live: bool) -> None:
        self.duration, self.port, self.console, self.live = duration, port, console, live
        self.base = f"http://127.0.0.1:{port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="gpuproof-demo-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROOF_")}
        self.gateway: subprocess.Popen | None = None
        self.others: list[subprocess.Popen] = []
        self.roles = [dataclasses.replace(r, procs=[]) for r in ROLES]  # fresh per run: ROLES stays a template
        self.stop = threading.Event()

    # processes ----------------------------------------------------------------------------------
    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        out = open(self.tmp / f"{log}.log", "ab")  # noqa: SIM115 - closed with the directory
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.tmp, start_new_session=True)

    def _cli(self, role: Role, *args: str, check: bool = True, timeout: float = 60) -> str:
        env = dict(self.env, GPUPROOF_CONFIG_DIR=str(role.config), GPUPROOF_GATEWAY=self.base)
        out = subprocess.run([sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=timeout, cwd=self.tmp)
        if check and out.returncode != 0:
            raise GpuproofError(f"{role.key}: gpuproof {' '.join(args)} failed: {out.stderr.strip()[-300:]}")
        return out.stdout

    def start_gateway(self) -> None:
        import httpx

        env = dict(self.env, GPUPROOF_DATA_DIR=str(self.tmp / "gateway"), GPUPROOF_VERIFY_TEST_SHAPE=TEST_SHAPE,
                   GPUPROOF_CHALLENGE_INTERVAL_S="2", GPUPROOF_POLL_RETRY_AFTER_S="1")
        self.gateway = self._spawn(["-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1", "--port",
                                    str(self.port), "--log-level", "warning"], env, "gateway")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise GpuproofError(f"the gateway did not start: {(self.tmp / 'gateway.log').read_text()[-400:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise GpuproofError(f"the gateway did not become ready on {self.base} within 30 s")

    def keys(self) -> tuple[str, str]:
        from gateway import admin
        from gateway.db import Database

        db = Database(f"sqlite:///{self.tmp / 'gateway' / 'gateway.db'}")
        try:
            return (admin.create_api_key(db, "demo-marketplace", ["jobs", "settle"]),
                    admin.create_api_key(db, "demo-validator", ["replay"]))
        finally:
            db.dispose()

    def local_claim(self) -> tuple[str, str]:
        """(model to claim, backend) for the honest provider: the first local GPU, else the CPU."""
        from agent.detect import detect
        from kernels.backend import cuda_status

        ok, _ = cuda_status()
        found = detect() if ok else []
        return (found[0].model, "cuda") if found else ("cpu-reference", "cpu")

    def register(self, role: Role, market) -> None:  # noqa: ANN001
        role.config = self.tmp / "agents" / role.key
        self._cli(role, "agent", "init")
        model = role.claim
        backend = "cpu"
        if model is None:
            model, backend = self.local_claim()
        self._cli(role, "agent", "register", "--gpu", model, "--name", role.name)
        role.provider_id = self._cli(role, "agent", "whoami").strip()
        role.job_id = market.create_job(f"demo-renter-{role.key}", role.provider_id, "demo:1",
                                        TRAINING if role.trains else None)["id"]
        env = dict(self.env, GPUPROOF_CONFIG_DIR=str(role.config), GPUPROOF_GATEWAY=self.base)
        if role.serves:
            args = ["-m", "agent.cli", "agent", "run", "--json", "--backend", backend]
            if role.adversary:
                args += ["--adversary", role.adversary]
            role.procs.append(self._spawn(args, env, f"{role.key}-agent"))
        if role.trains:
            args = ["-m", "agent.cli", "agent", "train", "--job", role.job_id, "--steps", str(TRAIN_STEPS),
                    "--step-delay", str(TRAIN_STEP_S), "--store", str(role.config / "checkpoints")]
            if role.trains != "honest":
                args += ["--cheat", role.trains]
            role.procs.append(self._spawn(args, env, f"{role.key}-train"))

    def validate(self, replay_key: str) -> None:
        """Replay every training job's drawn segments once the providers have answered."""
        validator = Role("validator", "validator", "", claim="")
        validator.config = self.tmp / "agents" / "validator"
        self._cli(validator, "agent", "init")
        for role in self.roles:
            if role.trains:
                self._cli(validator, "replay", "--job", role.job_id, "--api-key", replay_key, timeout=120)

    def shutdown(self) -> None:
        procs = [p for r in self.roles for p in r.procs] + self.others + ([self.gateway] if self.gateway else [])
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)

    # the table ----------------------------------------------------------------------------------
    def snapshot(self, client) -> list[dict[str, Any]]:  # noqa: ANN001
        rows = []
        for role in self.roles:
            if not role.provider_id:
                continue
            info = client.provider(role.provider_id)
            trust = info["trust"]
            verdicts = client.verdicts(role.provider_id, limit=200)["items"]
            last = verdicts[0]["verdict"] if verdicts else None
            training = client.training(role.job_id) if role.trains else None
            rows.append({"role": role, "claimed": ", ".join(d["claimed_profile"] for d in info["devices"]),
                         "verified": ", ".join(d["verified_class"] or "-" for d in info["devices"]),
                         "trust": trust, "verdicts": verdicts, "last": last, "training": training})
        return rows

    @staticmethod
    def _last(row: dict[str, Any]) -> tuple[str, str]:
        training = row["training"]
        if training and (failed := [a for a in training["audits"] if a["outcome"] == "fail"]):
            return "training fail", failed[0]["verdict"]["reason"]
        if training and training["flags"]:
            return "training flagged", training["flags"][0]
        if row["last"]:
            v = row["last"]
            if v["correctness"] == "fail":
                return "fail (wrong rows)", v["reasons"][0]
            return f"{v['outcome']} ({v['timing']})", v["reasons"][-1]
        if training:
            states = [a["state"] for a in training["audits"]]
            return f"training {training['state']}", (f"audits: {', '.join(states)}" if states else "committing")
        return "-", "waiting for a challenge"

    def table(self, rows: list[dict[str, Any]], title: str) -> Table:
        t = Table(title=title, expand=True)
        for col in ("provider", "claimed", "verified class", "score [lower]", "verdicts", "last verdict", "reason"):
            t.add_column(col, overflow="fold")
        for row in rows:
            trust, last = row["trust"], self._last(row)
            passed = sum(v["verdict"]["outcome"] == "pass" for v in row["verdicts"])
            style = "red" if last[0].startswith(("fail", "training fail", "training flagged")) else None
            t.add_row(f"{row['role'].name}\n({row['role'].key})", row["claimed"], row["verified"],
                      f"{trust['score']:.2f} [{trust['lower_bound']:.2f}]", f"{passed}/{len(row['verdicts'])} pass",
                      last[0], last[1][:160], style=style)
        return t

    # the verdict on the demo --------------------------------------------------------------------
    @staticmethod
    def judge(row: dict[str, Any], decision: dict[str, Any]) -> tuple[bool, str]:
        role, verdicts, training = row["role"], [v["verdict"] for v in row["verdicts"]], row["training"]
        audits = training["audits"] if training else []
        if role.expect == "honest":
            bad = [v for v in verdicts if v["outcome"] != "pass"]
            bad_audits = [a for a in audits if a["outcome"] != "pass"] + (training["flags"] if training else [])
            ok = bool(verdicts) and not bad and not bad_audits and decision["decision"] == "release"
            return ok, (f"{len(verdicts)} challenges passed, {len(audits)} training segments passed; "
                        f"{decision['decision']}" if ok else
                        f"{len(bad)} failed challenges, {len(bad_audits)} failed training checks, "
                        f"{len(verdicts)} verdicts; {decision['decision']}")
        if role.trains:
            failed = [a for a in audits if a["outcome"] == "fail"]
            ok = bool(failed) and decision["decision"] == "refund"
            return ok, (f"caught: {failed[0]['verdict']['reason']}; refund" if ok else
                        f"NOT caught: audits {[a['state'] for a in audits]}; {decision['decision']}")
        want = "slower-than-claimed" if role.adversary is None else None
        caught = [v for v in verdicts if v["outcome"] == "fail" and (want is None or v["timing"] == want)
                  and (want is not None or v["correctness"] == "fail")]
        ok = bool(caught) and decision["decision"] in ("hold", "refund")
        if not ok:
            return False, f"NOT caught in {len(verdicts)} challenges; {decision['decision']}"
        why = caught[0]["reasons"][0 if want is None else -1]
        return True, f"caught {len(caught)} of {len(verdicts)} times: {why[:140]}; {decision['decision']}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(duration: float = 60.0, serve: bool = False, port: int | None = None,
        console: Console | None = None) -> int:
    """Run the demo; 0 if every cheat was caught and every honest provider passed, 1 otherwise."""
    import shutil

    from gateway.client import GatewayClient

    console = console or Console(width=None if sys.stdout.isatty() else 150)
    demo = Demo(duration, port or free_port(), console, live=console.is_terminal)
    try:
        console.print(f"[bold]gpuproof demo[/]: gateway and dashboard on {demo.base} (loopback only), "
                      f"working directory {demo.tmp}")
        demo.start_gateway()
        market_key, replay_key = demo.keys()
        with GatewayClient(demo.base, market_key) as market:
            for role in demo.roles:
                demo.register(role, market)
            console.print(f"{len(demo.roles)} providers registered and running as separate processes; "
                          f"{duration:g} s of challenges and two training jobs")
            ok = _watch_and_settle(demo, market, replay_key)
        if serve:
            console.print(f"\n[bold]Serving[/] the gateway and dashboard at {demo.base}/ (Ctrl-C to stop).")
            while demo.gateway is not None and demo.gateway.poll() is None:
                time.sleep(0.5)
        return 0 if ok else 1
    except KeyboardInterrupt:
        console.print("\nstopped: every demo process is being stopped")
        return 130
    finally:
        demo.shutdown()
        shutil.rmtree(demo.tmp, ignore_errors=True)


def _watch_and_settle(demo: Demo, market, replay_key: str) -> bool:  # noqa: ANN001
    console = demo.console
    started = time.monotonic()
    validation: dict[str, Any] = {}

    def validate() -> None:
        try:
            demo.validate(replay_key)
            validation["done"] = True
        except GpuproofError as exc:
            validation["error"] = str(exc)

    trainers = [p for r in demo.roles if r.trains for p in r.procs[-1:]]
    validator: threading.Thread | None = None
    last_print = 0.0

    def rows() -> list[dict[str, Any]]:
        return demo.snapshot(market)

    def title() -> str:
        left = max(0.0, demo.duration - (time.monotonic() - started))
        return f"gpuproof demo: {left:.0f} s of challenges left, dashboard at {demo.base}/"

    with (Live(demo.table(rows(), title()), console=console, refresh_per_second=2) if demo.live
          else contextlib.nullcontext()) as live:
        while True:
            elapsed = time.monotonic() - started
            if validator is None and all(p.poll() is not None for p in trainers):
                for role in demo.roles:
                    if role.trains and role.procs[-1].returncode not in (0, None):
                        log = (demo.tmp / f"{role.key}-train.log").read_text()[-400:]
                        raise GpuproofError(f"{role.key}: the training process failed: {log}")
                validator = threading.Thread(target=validate, daemon=True)
                validator.start()
            finished = validator is not None and not validator.is_alive()
            if elapsed >= demo.duration and finished:
                break
            if elapsed >= demo.duration + 120:
                raise GpuproofError("training jobs did not finish within 120 s of the end of the challenges")
            snapshot = rows()
            if live is not None:
                live.update(demo.table(snapshot, title()))
            elif time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                console.print(f"[{elapsed:4.0f} s] " + "; ".join(
                    f"{r['role'].key}: {r['trust']['score']:.2f} [{r['trust']['lower_bound']:.2f}] "
                    f"{Demo._last(r)[0]}" for r in snapshot))
            time.sleep(0.5)
    if "error" in validation:
        raise GpuproofError(f"validator: {validation['error']}")
    for role in demo.roles:  # the challenge daemons stop; the gateway stays up for the settlement
        for p in role.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in role.procs:
            p.wait(timeout=30)
    decisions = {role.key: market.settle(role.job_id) for role in demo.roles}
    final = rows()
    console.print(demo.table(final, "gpuproof demo: final state"))
    summary = Table(title="Summary: was every cheat caught, did every honest provider pass?", expand=True)
    for col in ("provider", "expected", "result", "settlement", "why"):
        summary.add_column(col, overflow="fold")
    all_ok = True
    for row in final:
        role = row["role"]
        decision = decisions[role.key]
        ok, detail = Demo.judge(row, decision)
        all_ok &= ok
        if not ok:  # say what the provider's own process saw
            for log_file in sorted(demo.tmp.glob(f"{role.key}-*.log")):
                tail = log_file.read_text(errors="replace").strip().splitlines()[-6:]
                console.print(f"[dim]{log_file.name}:[/]\n" + "\n".join(line[:200] for line in tail))
        summary.add_row(role.name, role.expect, "[green]ok[/]" if ok else "[red]NOT OK[/]", decision["decision"],
                        f"{detail} | {decision['reasons'][0][:140]}")
    console.print(summary)
    console.print("[bold green]All cheats caught, all honest providers passed.[/]" if all_ok else
                  "[bold red]The demo did not go as expected: see the rows marked NOT OK.[/]")
    with contextlib.suppress(Exception):
        head = market.tree_head()
        console.print(f"Transparency log: {head.size} entries, root {head.root.hex()[:16]}..., signature checked.")
    return all_ok
