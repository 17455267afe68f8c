"""The `gpuproof` packages and the bench scripts type-check with mypy (the settings in pyproject.toml).

mypy does not follow setuptools' folder mapping, so the test lays the mapping out as links in a temporary
`gpuproof/` (the same tree the wheel holds) and checks that package, then the bench scripts against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support.server import ROOT

PACKAGES = ("kernels", "verifier", "gateway", "agent", "client", "cli", "simulators")


def test_packages_type_check(tmp_path):
    tree = tmp_path / "gpuproof"
    shutil.copytree(ROOT / "gpuproof", tree, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGES:
        (tree / name).symlink_to(ROOT / name, target_is_directory=True)
    env = {**os.environ, "MYPYPATH": str(tmp_path)}
    for target in (["-p", "gpuproof"], ["bench"]):
        run = subprocess.run([sys.executable, "-m", "mypy", *target], cwd=ROOT, capture_output=True, text=True,
                             timeout=600, stdin=subprocess.DEVNULL, env=env)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "Success" in run.stdout
