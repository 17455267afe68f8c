"""`gpuproof demo` as a newcomer runs it, and its dashboard in a real browser (headless Chromium).

The demo runs with --serve on a known port; once it prints its summary, Chromium loads the dashboard's
pages from the running gateway (the DOM after parsing, and a screenshot saved in the test's temporary
directory); then Ctrl-C (SIGINT) must stop every process and remove the demo's directory.
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

from tests.support import proctree
from tests.support.server import ROOT, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium(tmp: Path, *args: str) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_demo_catches_every_cheat_and_serves_its_dashboard(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROOF_")}
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "gpuproof", "demo", "--duration", "15", "--serve", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Serving" not in log.read_text():
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not finish in 240 s:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert "All cheats caught, all honest providers passed." in text, text[-9000:]  # with the agents' log tails
        for role in ("honest-box", "claims-an-h100", "skips-rows", "replays-old-roots", "lazy-trainer",
                     "one-card-four-devices"):
            assert re.search(rf"{role}\s.*\bok\b", text), (role, text[-4000:])
        assert re.search(r"honest-box .* release", text) and re.search(r"lazy-trainer .* refund", text)
        workdir = Path(re.search(r"working directory\s+(\S+)", text).group(1))
        assert workdir.is_dir()
        base = f"http://127.0.0.1:{port}"
        providers = httpx.get(f"{base}/v1/providers").json()["items"]
        assert len(providers) == 6
        if CHROMIUM is None:
            pytest.skip("chromium is not installed (.ci/run installs Debian's chromium): browser part skipped")
        index = chromium(tmp_path, "--dump-dom", f"{base}/?sort=score&order=desc")
        for name in ("honest-box", "claims-an-h100", "skips-rows", "replays-old-roots", "lazy-trainer",
                     "one-card-four-devices"):
            assert name in index
        assert index.index("honest-box") < index.index("skips-rows")  # sorted by score, best first
        assert "Signed log head" in index
        honest = next(p for p in providers if p["name"] == "honest-box")
        page = chromium(tmp_path, "--dump-dom", f"{base}/providers/{honest['id']}")
        assert 'id="score-chart"' in page and 'id="audits"' in page and "release" in page
        assert "transparency" in chromium(tmp_path, "--dump-dom", f"{base}/log")
        shot = tmp_path / "dashboard.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1200", f"{base}/providers/{honest['id']}")
        assert shot.stat().st_size > 10_000
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(timeout=60)
        except subprocess.TimeoutExpired:  # never leave a demo running: its whole tree, and its folder
            proctree.kill_tree(demo.pid)
            demo.wait(timeout=30)
            if found := re.search(r"working directory\s+(\S+)", log.read_text()):
                shutil.rmtree(found.group(1), ignore_errors=True)
            raise
    assert code == 130, log.read_text()[-2000:]
    assert not workdir.exists()  # nothing left behind
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=2)
