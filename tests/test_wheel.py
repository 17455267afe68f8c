"""The wheel's only top-level import name is `gpuproof` (issue 15).

`kernels` is the import name of Hugging Face's kernels, which training boxes are likely to have; a wheel that
claimed `kernels`, `verifier`, `gateway` or `agent` would break whichever of the two was installed second.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.support.server import ROOT

# What the build reads: the project's metadata and the folders of its packages (pyproject.toml's package-dir).
SOURCES = ("pyproject.toml", "README.md", "gpuproof", "kernels", "verifier", "gateway", "agent", "client", "cli",
           "simulators")


def test_the_wheel_has_one_top_level_name(tmp_path):
    # Built from a copy: setuptools writes its build/ folder (and an egg-info) next to the sources it builds.
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = tmp_path.glob("gpuproof-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"gpuproof"}, tops
    # what the packages need at run time travelled with them
    for wanted in ("gpuproof/kernels/cuda/gpuproof.cu", "gpuproof/verifier/data/gpu_profiles.toml",
                   "gpuproof/gateway/migrations/script.py.mako", "gpuproof/gateway/templates/base.html",
                   "gpuproof/gateway/migrations/versions/0001_initial_schema.py", "gpuproof/__main__.py",
                   "gpuproof/client/calls.py", "gpuproof/cli/__init__.py", "gpuproof/cli/provider.py",
                   "gpuproof/simulators/backends.py", "gpuproof/verifier/logproofs.py"):
        assert wanted in names, wanted
    with zipfile.ZipFile(wheel) as z:
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
        if top_level:
            assert z.read(top_level).decode().split() == ["gpuproof"]
