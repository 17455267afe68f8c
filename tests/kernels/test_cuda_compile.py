"""Every CUDA kernel compiles with nvcc for sm_80 and sm_90 with no register spills (no GPU needed)."""

from __future__ import annotations

import re
import subprocess
from importlib import resources

import pytest


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.nvcc
def test_kernels_compile_without_spills(arch, tmp_path):
    source = resources.files("gpuproof.kernels.cuda").joinpath("gpuproof.cu")
    out = subprocess.run(["nvcc", f"-arch={arch}", "-Xptxas", "-v", "-c", "-o", str(tmp_path / "k.o"),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    entries = set(re.findall(r"Compiling entry function '(\w+)'", log))
    assert {"round_key", "round_key_v2", "gen_nibbles", "gen_bytes", "leaf_hash_1k", "merkle_levels",
            "copy_hash"} <= entries
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    assert spills and not any(spills), log


def _libnvrtc() -> str | None:
    """libnvrtc from the nvidia-cuda-nvrtc wheel (the dev extra), if installed."""
    try:
        from importlib.util import find_spec

        spec = find_spec("nvidia")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    for root in spec.submodule_search_locations:
        for lib in sorted(Path(root).glob("cu*/lib/libnvrtc.so*")):
            return str(lib)
    return None


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_with_nvrtc_as_cupy_does(arch):
    """CuPy compiles the source at run time with NVRTC, which has no C library headers: check that path."""
    import ctypes

    lib_path = _libnvrtc()
    if lib_path is None:
        pytest.skip("libnvrtc not installed (pip install nvidia-cuda-nvrtc)")
    lib = ctypes.CDLL(lib_path)
    source = resources.files("gpuproof.kernels.cuda").joinpath("gpuproof.cu").read_bytes()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"gpuproof.cu", 0, None, None) == 0
    options = (ctypes.c_char_p * 2)(b"-std=c++17", f"--gpu-architecture={arch}".encode())
    status = lib.nvrtcCompileProgram(prog, 2, options)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode(errors="replace")
