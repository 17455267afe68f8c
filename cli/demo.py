"""`gpuproof demo`: the whole product on this machine, honestly, in about a minute.

An embedded gateway (uvicorn, SQLite in a temporary directory, loopback only) and provider agents as
separate processes over real HTTP, each with its own key and config directory:

  honest        serves challenges with the local backend (CUDA when there is a GPU, else cpu-reference),
                and runs a training job honestly
  overclaimer   claims an NVIDIA H100 and computes on the CPU: its timing gives it away
  row-skipper   commits to C_r with a quarter of the rows never computed (simulators/backends.py)
  replayer      commits an old challenge's roots to every new challenge
  lazy-trainer  a training job whose checkpoints are interpolated instead of trained
  many-devices  registers 4 devices of class demo-cpu and answers for all of them with one agent on one
                machine: the gateway challenges all four at the same instant, so all but the first come in
                slower than any honest demo-cpu card can

demo-cpu is a measured profile made for the demo: before the gateway starts, the demo measures this
machine's best rate (the fastest of 3 runs with BLAS's default threads and 3 with one) on the challenge it
will ask of demo-cpu (sized to take ~0.6 s), writes a profile with that rate and a narrow honest band
(0.9-1.8x, as measured profiles have) into its working folder and points the gateway at it
(GPUPROOF_PROFILES_FILE). cpu-reference cannot show the
one-card-many-devices cheat: its band is wide enough for every CI machine, so timing cannot tell one
card doing four challenges from four slower cards (docs/protocol.md, "Scheduled rounds").

A marketplace key creates one job per provider, after registering the validator's public key (the
validator's own API key, scope `replay`, is another tenant's: it reads and judges only because the jobs name
it); the validator replays the training segments the gateway draws (`gpuproof replay`). A live table shows
each provider's claimed and verified class, score with its lower bound, and last verdict; then a summary
and the settlement decisions. Exit 0 only if every cheat was caught and every honest provider passed.
`--serve` keeps the gateway and its dashboard up afterwards.

The dishonest providers run the hidden `gpuproof cheat run --adversary NAME` and `gpuproof cheat train --cheat
NAME` (defined at the end of this module): the agent's own `agent run` and `agent train` with a simulator of
cheating from gpuproof.simulators wired in. This module and the gateway-admin one are the command line's only
importers of gpuproof.simulators and the server (tests/test_packages.py).

Stopping: SIGINT (Ctrl-C), SIGTERM or SIGHUP, a failure of the demo itself, or a child that dies before
its time (named in the one-line error) stops every process the demo started and removes its working
directory, with or without a terminal and even when SIGINT was inherited as ignored (a background job of
a script). Each child runs in its own process group (a terminal's Ctrl-C reaches the demo, which stops
them in order) and, on Linux, gets SIGKILL if the demo itself is killed with SIGKILL (PR_SET_PDEATHSIG):
no gateway is left answering then either, though the working directory stays.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from gpuproof.cli import provider
from gpuproof.cli.common import BackendOpt, GatewayOpt, JobIdArg, JsonOpt
from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier.timing import format_rate
from rich.console import Console
from rich.live import Live
from rich.table import Table

# m, n, k, R: a small challenge on a CPU, every 2 s per device (an honest CPU's limit is ~2 s: room for a
# loaded machine); an H100 claim gets one that an H100 finishes far inside its limit, while a CPU takes longer
# than the slowest honest H100's limit (~0.33 s) even after the largest round-trip allowance (0.2 s) that a
# provider echoing its probes late can get. A smaller R left a CPU too close to that limit on a loaded machine
# (the timings are in docs/performance.md, "The demo's challenge sizes").
TEST_SHAPE = "128,2048,2048,4;h100-sxm=256,2048,4096,12"
# demo-cpu (the many-devices role): a challenge sized to take DEMO_CPU_SECONDS on this machine at its best,
# m, n, k below and R measured at start (Demo.calibrate). Its slow limit is then 0.6/0.9 + 0.25 + 3.89 *
# hypot(0.03 * 0.67, 0.02) = 1.03 s; four challenges at once on one machine need ~4 x 0.6 = 2.4 s, 2.3x past it, and the
# second of four done one after another (1.2 s) is past it too. At ~1 s each the four would keep both cores
# of a 2-core machine busy through every round (one every ~2 s) and starve the other providers.
DEMO_CPU_SECONDS = 0.6
DEMO_CPU_SHAPE = (128, 1024, 1024)
DEMO_CPU_BAND = (0.9, 1.8)  # eff_low, eff_high: narrow, as a measured profile's band is
TRAINING = {"interval": 10, "segments": 2, "chunks": 8, "mode": "exact", "min_step_s": 0.01,
            "workload": {"name": "mlp", "params": {"seed": 11, "hidden": 32}}}
TRAIN_STEPS, TRAIN_STEP_S = 120, 0.025  # a 3 s training run (the stand-in step is tiny; 25 ms stands in)
STOP_GRACE_S = 10.0  # how long stopped children get to exit on SIGTERM before SIGKILL
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no `except Exception` on
    the way swallows it before run() cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread, whatever the demo inherited: a
    background job of a non-interactive shell starts with SIGINT ignored, and Python then leaves it so.
    A SIGHUP ignored on purpose (nohup) stays ignored. Only the first signal raises; one that comes while
    a child is being started waits until the child is tracked, so none escapes the shutdown; any later
    one (or one during the cleanup) sets `hurry`: stop the children with SIGKILL without waiting."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.hurry = threading.Event()
        self.closing = False
        self._defer = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread; such a caller keeps its own
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            current = signal.getsignal(sig)
            if name == "SIGHUP" and current == signal.SIG_IGN:
                continue
            self._previous[sig] = current
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None or self.closing:
            self.signum = self.signum or signum
            self.hurry.set()
            return
        self.signum = signum
        if self._defer == 0:
            raise Stopped(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop back (in the main thread) until the block ends."""
        main = threading.current_thread() is threading.main_thread()
        self._defer += main
        try:
            yield
        finally:
            self._defer -= main
            if main and self._defer == 0 and self.signum is not None and not self.closing:
                raise Stopped(self.signum)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when the thread that started it ends (Linux
    PR_SET_PDEATHSIG): a demo killed with SIGKILL, which can run no cleanup, leaves no gateway or agent
    behind. None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    args = [ctypes.c_ulong(int(signal.SIGKILL))] + [ctypes.c_ulong(0)] * 3

    def preexec() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, *args)
        if os.getppid() != parent:  # the demo died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _last_line(log: Path) -> str:
    """The log's last line that says something (not a traceback's ^^^^ markers), cut to 200 characters."""
    with contextlib.suppress(OSError):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.strip(" ^~"):
                return line.strip()[:200]
    return ""


def _best_rate(shape: tuple[int, int, int, int], runs: int) -> float:
    """This machine's best rate now (ops/s) on a challenge of `shape` with the CPU backend: the fastest of
    `runs` runs with BLAS's default threads and `runs` on one BLAS thread (the way the many-devices agent
    runs; on a busy machine one thread is often the faster), each with its own seed."""
    from gpuproof.kernels.reference import CpuBackend
    from gpuproof.kernels.spec import SPEC
    from threadpoolctl import threadpool_limits

    backend = CpuBackend()
    best = float("inf")
    for i in range(2 * runs):
        with threadpool_limits(limits=1 if i % 2 else None, user_api="blas"):
            started = time.perf_counter()
            backend.run(ChallengeParams(bytes([i]) * 32, *shape, spec=SPEC))  # the spec the gateway issues
            best = min(best, time.perf_counter() - started)
    return ChallengeParams(bytes(32), *shape).operations / best


def _classes(names: Iterable[str]) -> str:
    """One class per device, the same class once with a count: "4 x demo-cpu", "demo-cpu, -"."""
    names = list(names)
    return f"{len(names)} x {names[0]}" if len(names) > 1 and len(set(names)) == 1 else ", ".join(names)


@dataclass
class Role:
    key: str
    name: str
    expect: str  # "honest" or the cheat it should be caught at
    claim: str | None = None  # the model it registers; None: the local GPU or cpu-reference
    adversary: str | None = None
    serves: bool = True  # runs the challenge daemon
    trains: str | None = None  # None: no training job; "honest" or a cheat of simulators.training.CHEATS
    devices: int = 1  # registered devices (agent register --count), all served by one agent process
    blas_threads: int | None = None  # OPENBLAS_NUM_THREADS for its agent; None: BLAS's default
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
    # its four workers compute at once in one process: with one BLAS thread each they share the cores evenly;
    # with OpenBLAS's pool they fought over it and came in past the deadline (docs/performance.md, "The demo's
    # challenge sizes")
    Role("many-devices", "one-card-four-devices", "one card answering for four", claim="demo-cpu", devices=4,
         blas_threads=1),
]


class Demo:
    def __init__(self, duration: float, port: int, console: Console, live: bool) -> None:
        self.duration, self.port, self.console, self.live = duration, port, console, live
        self.base = f"http://127.0.0.1:{port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="gpuproof-demo-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROOF_")}
        self.gateway: subprocess.Popen | None = None
        self.children: list[subprocess.Popen] = []  # every process the demo started, whatever it is
        self.logs: dict[int, Path] = {}  # pid -> the log of a long-running child
        self.stopped: set[int] = set()  # pids the demo stopped on purpose
        self.roles = [dataclasses.replace(r, procs=[]) for r in ROLES]  # fresh per run: ROLES stays a template
        self.demo_cpu_shape, self.demo_cpu_rate = (*DEMO_CPU_SHAPE, 1), 0.0  # measured by Demo.calibrate
        self.signals = StopSignals()
        self._lock = threading.Lock()  # the validator thread starts children too
        self._preexec = _die_with_parent()

    # processes ----------------------------------------------------------------------------------
    def _spawn(self, args: list[str], env: dict[str, str], log: str | None) -> subprocess.Popen:
        """Start `python *args` in its own process group and track it; its output goes to `log`.log, or
        to pipes when `log` is None. Refused once the shutdown has begun."""
        with self.signals.deferred(), self._lock:
            if self.signals.closing:
                raise GpuproofError("the demo is stopping")
            with contextlib.ExitStack() as files:
                out: Any = subprocess.PIPE
                if log is not None:
                    out = files.enter_context(open(self.tmp / f"{log}.log", "ab"))  # the child keeps its copy
                proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                        stderr=subprocess.STDOUT if log else subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, cwd=self.tmp, start_new_session=True,
                                        preexec_fn=self._preexec, text=log is None)
            self.children.append(proc)
            if log is not None:
                self.logs[proc.pid] = self.tmp / f"{log}.log"
            return proc

    def _cli(self, role: Role, *args: str, check: bool = True, timeout: float = 60) -> str:
        env = dict(self.env, GPUPROOF_CONFIG_DIR=str(role.config), GPUPROOF_GATEWAY=self.base)
        proc = self._spawn(["-m", "gpuproof", *args], env, None)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.terminate([proc], grace=0)
            raise GpuproofError(f"{role.key}: gpuproof {' '.join(args)} did not finish in {timeout:g} s") from None
        with self._lock:
            self.children.remove(proc)
        if check and proc.returncode != 0:
            raise GpuproofError(f"{role.key}: gpuproof {' '.join(args)} failed: {stderr.strip()[-300:]}")
        return stdout

    def calibrate(self) -> tuple[int, int, int, int]:
        """Measure this machine's best rate on a demo-cpu challenge and write the demo-cpu profile for the
        gateway (profiles.toml in the working folder); the challenge shape (m, n, k, R) demo-cpu gets.

        R is sized so that one challenge takes ~DEMO_CPU_SECONDS (twice: the first estimate misses the fixed
        costs of a run); the rate is the fastest of 3 + 3 runs (`_best_rate`) of exactly that challenge, the
        strictest class this machine can claim (a busier moment later only makes a cheat slower)."""
        m, n, k = DEMO_CPU_SHAPE
        rounds = 4
        for runs in (1, 1):
            rounds = max(1, round(DEMO_CPU_SECONDS * _best_rate((m, n, k, rounds), runs)
                                  / ChallengeParams(bytes(32), m, n, k, 1).operations))
        shape = (m, n, k, rounds)
        rate = _best_rate(shape, 3)
        low, high = DEMO_CPU_BAND
        (self.tmp / "profiles.toml").write_text(
            "# written by `gpuproof demo`: this machine's best rate on the demo-cpu challenge\n"
            "[profiles.demo-cpu]\n"
            'name = "demo CPU (measured on this machine)"\n'
            f"int8_tops = {rate / 1e12!r}\nmemory_gib = 4\nbandwidth_gbs = 10\n"
            f"eff_low = {low!r}\neff_high = {high!r}\nmeasured = true\narch = \"cpu\"\n")
        self.demo_cpu_shape, self.demo_cpu_rate = shape, rate
        return shape

    def start_gateway(self) -> None:
        import httpx

        # not tmp/gateway: the children run in tmp, and a `gateway` folder there would shadow the gateway
        # package of an editable install (its finder comes after the one for the current directory)
        shape = TEST_SHAPE + ";demo-cpu=" + ",".join(map(str, self.demo_cpu_shape))
        env = dict(self.env, GPUPROOF_DATA_DIR=str(self.tmp / "gateway-data"), GPUPROOF_VERIFY_TEST_SHAPE=shape,
                   GPUPROOF_PROFILES_FILE=str(self.tmp / "profiles.toml"),
                   GPUPROOF_CHALLENGE_INTERVAL_S="2", GPUPROOF_POLL_RETRY_AFTER_S="1",
                   # a one-minute run: a challenge answered too late (one card answering four devices can be)
                   # is judged a few seconds after its deadline, not after the default minute
                   GPUPROOF_EXPIRY_GRACE_S="5")
        self.gateway = self._spawn(["-m", "uvicorn", "gpuproof.gateway.asgi:app", "--host", "127.0.0.1", "--port",
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
        from gpuproof.gateway import admin
        from gpuproof.gateway.db import Database

        db = Database(f"sqlite:///{self.tmp / 'gateway-data' / 'gateway.db'}")
        try:
            return (admin.create_api_key(db, "demo-marketplace", ["jobs", "settle"]),
                    admin.create_api_key(db, "demo-validator", ["replay"]))
        finally:
            db.dispose()

    def local_claim(self) -> tuple[str, str]:
        """(model to claim, backend) for the honest provider: the first local GPU, else the CPU."""
        from gpuproof.agent.detect import detect
        from gpuproof.kernels.backend import cuda_status

        ok, _ = cuda_status()
        found = detect() if ok else []
        return (found[0].model, "cuda") if found else ("cpu-reference", "cpu")

    def register(self, role: Role, market) -> None:  # noqa: ANN001
        self.check_children()  # the providers registered so far are still up
        role.config = self.tmp / "agents" / role.key
        self._cli(role, "agent", "init")
        model = role.claim
        backend = "cpu"
        if model is None:
            model, backend = self.local_claim()
        self._cli(role, "agent", "register", "--gpu", model, "--count", str(role.devices), "--name", role.name)
        role.provider_id = self._cli(role, "agent", "whoami").strip()
        role.job_id = market.create_job(f"demo-renter-{role.key}", role.provider_id, "demo:1",
                                        TRAINING if role.trains else None).id
        env = dict(self.env, GPUPROOF_CONFIG_DIR=str(role.config), GPUPROOF_GATEWAY=self.base)
        if role.blas_threads is not None:
            env.update(OPENBLAS_NUM_THREADS=str(role.blas_threads), OMP_NUM_THREADS=str(role.blas_threads))
        # an honest provider runs the agent's own commands; a dishonest one the hidden `gpuproof cheat` ones,
        # which are the same with a simulator of cheating wired in (gpuproof.simulators)
        if role.serves:
            how = ["cheat", "run", "--adversary", role.adversary] if role.adversary else ["agent", "run"]
            args = ["-m", "gpuproof", *how, "--json", "--backend", backend]
            role.procs.append(self._spawn(args, env, f"{role.key}-agent"))
        if role.trains:
            how = ["agent", "train"] if role.trains == "honest" else ["cheat", "train", "--cheat", role.trains]
            args = ["-m", "gpuproof", *how, "--job", role.job_id, "--steps", str(TRAIN_STEPS),
                    "--step-delay", str(TRAIN_STEP_S), "--store", str(role.config / "checkpoints")]
            role.procs.append(self._spawn(args, env, f"{role.key}-train"))

    def validator_role(self) -> Role:
        validator = Role("validator", "validator", "", claim="")
        validator.config = self.tmp / "agents" / "validator"
        return validator

    def register_validator(self, market) -> None:  # noqa: ANN001
        """Make the validator's key and register it with the marketplace, before any job: a job names the
        validators its marketplace registered, and only they may read its uploads and judge its audits."""
        validator = self.validator_role()
        self._cli(validator, "agent", "init")
        market.register_validator(self._cli(validator, "agent", "whoami", "--public-key").strip(), "demo-validator")

    def validate(self, replay_key: str) -> None:
        """Replay every training job's drawn segments once the providers have answered."""
        validator = self.validator_role()
        for role in self.roles:
            if role.trains:
                self._cli(validator, "replay", "--job", role.job_id, "--api-key", replay_key, timeout=120)

    def terminate(self, procs: Sequence[subprocess.Popen], grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to each child's process group, SIGKILL to those still running after `grace` seconds (at
        once after a second stop signal); returns when every one has exited and been reaped."""
        self.stopped.update(p.pid for p in procs)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            running = [p for p in procs if p.poll() is None]
            for p in running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
            deadline = time.monotonic() + wait
            while running and time.monotonic() < deadline:
                if sig == signal.SIGTERM and self.signals.hurry.is_set():
                    break
                time.sleep(0.05)
                running = [p for p in running if p.poll() is None]

    def shutdown(self) -> None:
        """Stop every child the demo started; no new one starts from here on (the validator thread's)."""
        with self._lock:
            self.signals.closing = True
            procs = list(self.children)
        self.terminate(procs)

    def dead_child(self) -> str | None:
        """Why the demo cannot go on, when a child ended before its time: the gateway or a challenge daemon
        at all, a training run with an error; None while all is well."""
        for proc in ([self.gateway] if self.gateway else []) + [p for r in self.roles for p in r.procs]:
            code, log = proc.poll(), self.logs[proc.pid]  # logs: gateway, <role>-agent, <role>-train
            trains = log.stem.endswith("-train")
            if code is None or proc.pid in self.stopped or (code == 0 and trains):
                continue
            what = ("the gateway" if proc is self.gateway else
                    f"{log.stem.rsplit('-', 1)[0]}: its {'training' if trains else 'agent'} process")
            tail = _last_line(log) if code > 0 else ""
            return f"{what} (pid {proc.pid}) {_describe_exit(code)}" + (f": {tail}" if tail else "")
        return None

    def check_children(self) -> None:
        if (reason := self.dead_child()) is not None:
            raise GpuproofError(reason)

    # the table ----------------------------------------------------------------------------------
    def snapshot(self, client) -> list[dict[str, Any]]:  # noqa: ANN001
        rows = []
        for role in self.roles:
            if not role.provider_id:
                continue
            info = client.provider(role.provider_id).model_dump(mode="json")  # the table reads plain JSON
            trust = info["trust"]
            verdicts = client.verdicts(role.provider_id, limit=200).model_dump(mode="json")["items"]
            last = verdicts[0]["verdict"] if verdicts else None
            training = client.training(role.job_id) if role.trains else None
            rows.append({"role": role, "claimed": _classes(d["claimed_profile"] for d in info["devices"]),
                         "verified": _classes(d["verified_class"] or "-" for d in info["devices"]),
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
            timing_reason = next((r for r in v["reasons"] if r.startswith("measured")), v["reasons"][-1])
            return f"{v['outcome']} ({v['timing']})", timing_reason
        if training:
            states = [a["state"] for a in training["audits"]]
            return f"training {training['state']}", (f"audits: {', '.join(states)}" if states else "committing")
        return "-", "waiting for a challenge"

    def table(self, rows: list[dict[str, Any]], title: str) -> Table:
        t = Table(title=title, expand=True, caption=r"score \[lower]: the trust score and, in brackets, its 95% lower "
                  "bound; payment is released only once the lower bound clears the release threshold")
        for col in ("provider", "claimed", "verified class", r"score \[lower]", "verdicts", "last verdict", "reason"):
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
        if role.devices > 1:  # one card answering for several: its rows are right, its time gives it away
            late = [v for v in verdicts if v["outcome"] == "fail" and v["timing"] in ("slower-than-claimed", "timeout")]
            ok = bool(late) and decision["decision"] in ("hold", "refund")
            if not ok:
                return False, f"NOT caught in {len(verdicts)} challenges; {decision['decision']}"
            typical = sorted(late, key=lambda v: v["measured_s"])[len(late) // 2]  # the median caught one
            why = next((r for r in typical["reasons"] if "than any honest" in r or "deadline" in r),
                       typical["reasons"][0])
            rows = "every row right" if all(v["correctness"] == "pass" for v in verdicts) else "some rows wrong"
            return True, (f"caught {len(late)} of {len(verdicts)} ({role.devices} challenges at once on one "
                          f"card, {rows}): {why[:140]}; {decision['decision']}")
        want = "slower-than-claimed" if role.adversary is None else None
        caught = [v for v in verdicts if v["outcome"] == "fail" and (want is None or v["timing"] == want)
                  and (want is not None or v["correctness"] == "fail")]
        ok = bool(caught) and decision["decision"] in ("hold", "refund")
        if not ok:
            return False, f"NOT caught in {len(verdicts)} challenges; {decision['decision']}"
        why = caught[0]["reasons"][0] if want is None else next(  # the timing reason, not the cheat bound's
            (r for r in caught[0]["reasons"] if "than any honest" in r), caught[0]["reasons"][-1])
        return True, f"caught {len(caught)} of {len(verdicts)} times: {why[:140]}; {decision['decision']}"


def demo_console(file: TextIO | None = None) -> Console:
    """The demo's console: the terminal's width on a terminal; off one (a log, a pipe), tables 150 columns
    wide and every other line whole, never wrapped mid-phrase at rich's default of 80 columns."""
    tty = (file or sys.stdout).isatty()
    return Console(file=file, width=None if tty else 150, soft_wrap=not tty)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(duration: float = 60.0, serve: bool = False, port: int | None = None,
        console: Console | None = None) -> int:
    """Run the demo; 0 if every cheat was caught and every honest provider passed, 1 otherwise, 128 + the
    signal's number when SIGINT, SIGTERM or SIGHUP stopped it. However it ends, every process it started
    has exited and its working directory is gone when this returns or raises; a child that died before
    its time is the error's one-line reason (GpuproofError)."""
    import shutil

    console = console or demo_console()
    demo = Demo(duration, port or free_port(), console, live=console.is_terminal)
    demo.signals.install()
    try:
        try:
            return _run(demo, serve)
        except Exception as exc:  # a dead child is the likely cause of what failed next (a refused connection)
            reason = demo.dead_child()
            if reason is None or (isinstance(exc, GpuproofError) and str(exc) == reason):
                raise
            raise GpuproofError(reason) from exc
        finally:
            demo.signals.closing = True  # from here a signal only hurries the shutdown
            demo.shutdown()
            shutil.rmtree(demo.tmp, ignore_errors=True)
    except (Stopped, KeyboardInterrupt) as stop:  # KeyboardInterrupt: a Ctrl-C before the handlers were in
        signum = stop.signum if isinstance(stop, Stopped) else int(signal.SIGINT)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            console.print(f"\nstopped by {signal.Signals(signum).name}: every demo process has exited, "
                          f"{demo.tmp} is removed")
        return 128 + signum
    finally:
        demo.signals.restore()


def _run(demo: Demo, serve: bool) -> int:
    from gpuproof.client import GatewayClient

    console = demo.console
    console.print(f"[bold]gpuproof demo[/]: gateway on {demo.base} (loopback only), live dashboard "
                  f"{demo.base}/?refresh=5, working directory {demo.tmp}")
    m, n, k, rounds = demo.calibrate()
    work = ChallengeParams(bytes(32), m, n, k, rounds).operations
    console.print(f"demo-cpu profile: this machine's best rate, {format_rate(demo.demo_cpu_rate)}, on its "
                  f"{m}x{n}x{k}, {rounds}-round challenge ({work / demo.demo_cpu_rate:.2f} s); "
                  f"honest band {DEMO_CPU_BAND[0]:g}-{DEMO_CPU_BAND[1]:g}x")
    demo.start_gateway()
    market_key, replay_key = demo.keys()
    with GatewayClient(demo.base, market_key) as market:
        demo.register_validator(market)
        for role in demo.roles:
            demo.register(role, market)
        console.print(f"{len(demo.roles)} providers registered and running as separate processes; "
                      f"{demo.duration:g} s of challenges and two training jobs")
        ok = _watch_and_settle(demo, market, replay_key)
    if serve:
        console.print(f"\n[bold]Serving[/] the gateway and dashboard at {demo.base}/ (Ctrl-C to stop).")
        while True:  # until a signal; the gateway dying is an error
            demo.check_children()
            time.sleep(0.5)
    return 0 if ok else 1


SETTLE_WAIT_S = 90.0  # the longest the providers' rounds can keep a settlement "in progress"


def _settle_when_judged(demo: Demo, market) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """Each role's settlement, asked again (a hold is not final) while it holds only because a challenge is
    still in progress: the providers still serve, so that challenge is answered and judged in a moment
    (a round comes every few seconds and lasts a fraction of one), and settling during it says "hold", not
    what the challenge showed. At most SETTLE_WAIT_S."""
    until = time.monotonic() + SETTLE_WAIT_S
    while True:
        decisions = {role.key: market.settle(role.job_id).model_dump(mode="json") for role in demo.roles}
        waiting = [k for k, d in decisions.items()
                   if d.get("decision") == "hold" and any("in progress" in r for r in d.get("reasons") or [])]
        if not waiting or time.monotonic() > until:
            return decisions
        demo.console.print(f"waiting for the verdicts of challenges still in progress: {', '.join(waiting)}")
        demo.check_children()
        time.sleep(1.0)


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
        return f"gpuproof demo: {left:.0f} s of challenges left, dashboard at {demo.base}/?refresh=5"

    with (Live(demo.table(rows(), title()), console=console, refresh_per_second=2) if demo.live
          else contextlib.nullcontext()) as live:
        while True:
            elapsed = time.monotonic() - started
            demo.check_children()  # a training run that failed, an agent or the gateway that died
            if validator is None and all(p.poll() is not None for p in trainers):
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
    demo.check_children()
    # settled while the providers still serve, as a marketplace settles a job that ended: a provider stopped
    # first would leave a round issued at that instant unanswered, and a missed challenge holds its payment
    decisions = _settle_when_judged(demo, market)
    final = rows()
    demo.terminate([p for role in demo.roles for p in role.procs])  # the gateway stays up for the dashboard
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
        console.print(f"Transparency log: {head.size} entries, root {head.root.hex()[:16]}..., checkpoint verified.")
    return all_ok


# --- the command line ------------------------------------------------------------------------------
def demo_command(duration: Annotated[float, typer.Option("--duration", help="Seconds of challenges.")] = 60.0,
                 serve: Annotated[bool, typer.Option("--serve", help="Keep the gateway and dashboard running "
                                                     "afterwards, until Ctrl-C.")] = False,
                 port: Annotated[int | None, typer.Option("--port", help="Loopback port (default: a free one).")]
                 = None) -> None:
    """The whole product on this machine: an embedded gateway and honest and cheating provider agents as
    separate processes over loopback HTTP, a live table, then the summary and settlement decisions. Exits 0
    only if every cheat was caught and every honest provider passed."""
    if not 5 <= duration <= 3600:
        raise InvalidParameter("--duration", f"must be 5 to 3600 seconds, got {duration:g}")
    if port is not None and not 1024 <= port <= 65535:
        raise InvalidParameter("--port", f"must be 1024 to 65535, got {port}")
    code = run(duration, serve, port)
    if code:
        raise typer.Exit(code)


cheat_app = typer.Typer(help="The demo's dishonest providers (docs/threat-model.md).", no_args_is_help=True)


@cheat_app.command("run")
def cheat_run(adversary: Annotated[str, typer.Option("--adversary", help="A dishonest backend of "
                                                     "gpuproof.simulators.backends.")],
              gateway: GatewayOpt = None, backend: BackendOpt = "auto",
              max_challenges: provider.MaxChallengesOpt = None, as_json: JsonOpt = False) -> None:
    """`agent run`, every device computed by the dishonest backend `--adversary`."""
    from gpuproof.simulators.backends import ADVERSARIES

    if adversary not in ADVERSARIES:
        raise InvalidParameter("--adversary", f"expected one of {sorted(ADVERSARIES)}")
    provider.serve(gateway, backend, max_challenges, as_json, lambda device: ADVERSARIES[adversary]())


@cheat_app.command("train")
def cheat_train(job: JobIdArg, cheat: Annotated[str, typer.Option("--cheat", help="A dishonest run of "
                                                                  "gpuproof.simulators.training.")],
                steps: provider.StepsOpt = 40, gateway: GatewayOpt = None, store: provider.StoreOpt = None,
                step_delay: provider.StepDelayOpt = 0.0, as_json: JsonOpt = False) -> None:
    """`agent train`, trained and reported the dishonest way `--cheat` names."""
    from gpuproof.simulators.training import cheating_run

    provider.train(job, steps, gateway, store, step_delay, as_json, cheating_run(cheat))
