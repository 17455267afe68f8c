"""`gpuproof demo --serve` stops everything it started, however it is stopped (tracker issue 14).

Started as a script starts a background job (stdin /dev/null, SIGINT ignored: a non-interactive shell's
background job inherits it so, and the demo used to ignore Ctrl-C then), the demo is stopped mid-run by
SIGINT, SIGTERM or SIGHUP, or fails because one of its agents was killed. Each time it must exit within a
bound calibrated on this machine, leave no process of its tree running (none re-parented elsewhere, none
still working in its folder), close the gateway's port and remove its working directory. Every test kills
whatever is left in a `finally`, so a failing test never leaves a demo running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gpuproof.cli.demo import STOP_GRACE_S

from tests.support import proctree
from tests.support.calibrate import scaled
from tests.support.server import ROOT, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree in /proc")

REGISTERED = "providers registered and running"


@pytest.fixture(scope="module")
def stop_bound() -> float:
    """Seconds a stopped demo may take to exit: its own grace for children that ignore SIGTERM, plus 10 s
    on the reference machine (it takes ~1 s there) scaled to this one."""
    return STOP_GRACE_S + scaled(10)


class Demo:
    """The demo as a script's background job would run: SIGINT ignored, stdin from /dev/null, output to a
    file. It leads its own session, so the test can kill what it started without touching pytest."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "demo.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROOF_")}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gpuproof", "demo", "--duration", "15", "--serve", "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, ready, what: str) -> None:  # noqa: ANN001
        """Until `ready()`: ~15-30 s on the reference machine to register every provider."""
        limit = scaled(120)
        deadline = time.monotonic() + limit
        while not ready():
            assert self.proc.poll() is None, f"the demo exited before {what}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {limit:.0f} s:\n{self.output()[-3000:]}"
            time.sleep(0.2)

    def gateway_answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def workdir(self) -> Path:
        found = re.search(r"working directory\s+(\S+)", self.output())
        assert found, self.output()[-2000:]
        return Path(found.group(1))

    def tree(self) -> list[proctree.Proc]:
        """The demo and everything under it now; the gateway must be among them."""
        tree = [proctree.me(self.proc.pid), *proctree.descendants(self.proc.pid)]
        assert any("uvicorn" in p.cmdline for p in tree), [p.cmdline for p in tree]
        return tree

    def stopped_within(self, bound: float) -> tuple[int, float]:
        started = time.monotonic()
        try:
            code = self.proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not exit within {bound:.0f} s:\n{self.output()[-3000:]}")
        return code, time.monotonic() - started

    def assert_nothing_left(self, tree: list[proctree.Proc], workdir: Path) -> None:
        assert proctree.alive(tree) == [], "left running: " + "; ".join(p.cmdline for p in proctree.alive(tree))
        assert proctree.in_directory(workdir) == [], proctree.in_directory(workdir)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{self.base}/healthz", timeout=2)
        assert not workdir.exists(), sorted(str(p) for p in workdir.rglob("*"))[:20]

    def kill(self) -> None:
        """Whatever is left of the demo's tree, by SIGKILL, reaped; and its folder, which a demo killed so
        cannot remove."""
        if self.proc.poll() is None:
            proctree.kill_tree(self.proc.pid)
            self.proc.wait(timeout=30)
        if found := re.search(r"working directory\s+(\S+)", self.output()):
            shutil.rmtree(found.group(1), ignore_errors=True)


@pytest.fixture
def demo(tmp_path):
    started = Demo(tmp_path)
    try:
        yield started
    finally:
        started.kill()


def test_sigint_stops_a_demo_that_inherited_sigint_ignored(demo, stop_bound):
    """Sent once every provider runs: the gateway, five challenge daemons, the trainers (a 3 s training
    run may have ended already)."""
    demo.wait_for(lambda: REGISTERED in demo.output(), "registration")
    workdir, tree = demo.workdir(), demo.tree()
    daemons = [p for p in tree if " agent run " in p.cmdline or " cheat run " in p.cmdline]  # honest, dishonest
    assert len(daemons) == 5, [p.cmdline for p in tree]
    demo.proc.send_signal(signal.SIGINT)
    code, took = demo.stopped_within(stop_bound)
    assert code == 128 + signal.SIGINT, demo.output()[-2000:]
    assert "stopped by SIGINT" in demo.output()
    demo.assert_nothing_left(tree, workdir)
    print(f"stopped {len(tree)} processes in {took:.1f} s (bound {stop_bound:.0f} s)")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_stops_the_demo_while_it_registers_providers(demo, stop_bound, sig):
    """Sent as soon as the gateway answers: the demo is then starting its providers' CLI processes."""
    demo.wait_for(demo.gateway_answers, "gateway")
    workdir, tree = demo.workdir(), demo.tree()
    demo.proc.send_signal(sig)
    code, took = demo.stopped_within(stop_bound)
    assert code == 128 + sig, demo.output()[-2000:]
    assert f"stopped by {sig.name}" in demo.output()
    demo.assert_nothing_left(tree, workdir)
    print(f"stopped {len(tree)} processes in {took:.1f} s (bound {stop_bound:.0f} s)")


def agents(pid: int) -> list[proctree.Proc]:
    return [p for p in proctree.descendants(pid) if " agent run " in p.cmdline]


def test_an_agent_killed_mid_run_fails_the_demo_with_its_reason(demo, stop_bound):
    """The honest provider's challenge daemon, killed as soon as it runs (the others still registering)."""
    demo.wait_for(lambda: agents(demo.proc.pid), "agent process")
    workdir, tree = demo.workdir(), demo.tree()
    honest = next(p for p in tree if " agent run " in p.cmdline)
    os.kill(honest.pid, signal.SIGKILL)
    code, took = demo.stopped_within(stop_bound)
    assert code == 1, demo.output()[-2000:]
    last = demo.output().strip().splitlines()[-1]
    assert re.fullmatch(rf"gpuproof: error: honest: its agent process \(pid {honest.pid}\) was killed by SIGKILL",
                        last), demo.output()[-2000:]
    demo.assert_nothing_left(tree, workdir)
    print(f"failed and stopped {len(tree)} processes in {took:.1f} s (bound {stop_bound:.0f} s)")
