"""The four import packages and the bench scripts type-check with mypy (the settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import ROOT


def test_packages_type_check():
    run = subprocess.run([sys.executable, "-m", "mypy", "kernels", "verifier", "gateway", "agent", "bench"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
