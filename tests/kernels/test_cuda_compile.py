"""Every CUDA kernel compiles with nvcc for sm_80 and sm_90 with no register spills (no GPU needed)."""

from __future__ import annotations

import re
import subprocess
from importlib import resources

import pytest

pytestmark = pytest.mark.nvcc


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_without_spills(arch, tmp_path):
    source = resources.files("kernels.cuda").joinpath("gpuproof.cu")
    out = subprocess.run(["nvcc", f"-arch={arch}", "-Xptxas", "-v", "-c", "-o", str(tmp_path / "k.o"),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    entries = set(re.findall(r"Compiling entry function '(\w+)'", log))
    assert {"round_key", "gen_nibbles", "leaf_hash_1k", "leaf_tree_1k", "merkle_levels", "copy_hash"} <= entries
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    assert spills and not any(spills), log
