"""kernels/cuda/memory.cu compiles with nvcc for sm_80 and sm_90 with no register spills, and with NVRTC as
CuPy compiles it (no GPU needed; skipped where the compiler is absent)."""

from __future__ import annotations

import ctypes
import re
import subprocess
from importlib import resources

import pytest

from tests.kernels.test_cuda_compile import _libnvrtc


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.nvcc
def test_memory_kernels_compile_without_spills(arch, tmp_path):
    source = resources.files("gpuproof.kernels.cuda").joinpath("memory.cu")
    out = subprocess.run(["nvcc", f"-arch={arch}", "-Xptxas", "-v", "-c", "-o", str(tmp_path / "m.o"), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert {"table_pad", "walk"} <= set(re.findall(r"Compiling entry function '(\w+)'", log))
    spills = [int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    assert spills and not any(spills), log


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_memory_kernels_compile_with_nvrtc(arch):
    lib_path = _libnvrtc()
    if lib_path is None:
        pytest.skip("libnvrtc not installed (pip install nvidia-cuda-nvrtc)")
    lib = ctypes.CDLL(lib_path)
    source = resources.files("gpuproof.kernels.cuda").joinpath("memory.cu").read_bytes()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"memory.cu", 0, None, None) == 0
    options = (ctypes.c_char_p * 2)(b"-std=c++17", f"--gpu-architecture={arch}".encode())
    status = lib.nvrtcCompileProgram(prog, 2, options)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode(errors="replace")
