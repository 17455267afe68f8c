"""Every module the product imports at run time comes from [project.dependencies] (issue 14).

The README's main command installs the package without its dev extra; a module imported at run time that only
the dev extra brings (threadpoolctl was one: the demo's honest trainer died with ModuleNotFoundError) fails
there and nowhere in a dev environment. deptry reads the imports of the packages and the dependency lists
in pyproject.toml, so this check follows both as they change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _deptry() -> list[str]:
    exe = Path(sys.executable).with_name("deptry")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("deptry")
    if found is None:
        pytest.fail("deptry is not installed: `pip install -e '.[dev]'` brings it")
    return [found]


def test_every_runtime_import_is_a_declared_runtime_dependency():
    out = subprocess.run([*_deptry(), "."], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_dev_only_import_is_caught(tmp_path):
    """The check can fail: a runtime module that imports a dev-only package (as workload.py did) is reported."""
    project = tmp_path / "proj"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "tests",
                                                                 "bench", "docs", "__pycache__"))
    (project / "verifier" / "uses_dev_only.py").write_text("import pymerkle\n")
    out = subprocess.run([*_deptry(), "."], cwd=project, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    assert "DEP004" in out.stdout + out.stderr and "pymerkle" in out.stdout + out.stderr
