"""A stand-in for the parts of CuPy that kernels/cuda_backend.py uses, over NumPy, for CI without a GPU.

It stands in for the platform, not for the code under test: `RawModule` kernels are the real kernel
source compiled for the host (tests/support/cuda_emu.py), and cuBLAS `gemmEx` is implemented from
cuBLAS's documented column-major contract (op(A) is m x k, op(B) is k x n, C is m x n, leading dimensions
in elements), computed exactly. Streams and events are no-ops: work runs when it is enqueued, so this
checks the backend's buffers, offsets, arguments and plans, not its concurrency (EmuBackend's random
schedules check the plans' dependencies; a GPU run checks the rest).

    with installed(monkeypatch):   # sys.modules["cupy"] and its submodules, undone after the test
        from gpuproof.kernels.cuda_backend import CudaBackend
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import types
from importlib import resources

import numpy as np

from tests.support import cuda_emu


class FakeArray(np.ndarray):
    """A "device" array: NumPy memory, with CuPy's .get(), .set() and .data.ptr."""

    def get(self) -> np.ndarray:
        return np.array(self, copy=True)

    def set(self, value: np.ndarray) -> None:
        self[...] = value

    @property
    def data(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _device(x: np.ndarray) -> FakeArray:
    return x.view(FakeArray)


def empty(shape, dtype=np.float64) -> FakeArray:  # noqa: ANN001
    return _device(np.empty(shape, dtype=dtype))


def zeros(shape, dtype=np.float64) -> FakeArray:  # noqa: ANN001
    return _device(np.zeros(shape, dtype=dtype))


def asarray(x, dtype=None) -> FakeArray:  # noqa: ANN001
    if isinstance(x, FakeArray) and (dtype is None or x.dtype == dtype):
        return x
    return _device(np.array(x, dtype=dtype, copy=True))


def ascontiguousarray(x) -> FakeArray:  # noqa: ANN001
    return _device(np.ascontiguousarray(x))


class Kernel:
    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.fn = getattr(lib, f"emu_{name}")

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple) -> None:
        if len(grid) != 1 or len(block) != 1:
            raise ValueError("the emulation runs one-dimensional grids and blocks")
        raw = [a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args]
        self.fn(int(grid[0]), int(block[0]), *raw)


class RawModule:
    """Compiles `code` (which must be the shipped kernel source) for the host, with its -D options."""

    def __init__(self, code: str, options: tuple[str, ...] = ()) -> None:
        shipped = resources.files("gpuproof.kernels.cuda").joinpath("gpuproof.cu").read_text()
        if code != shipped:
            raise ValueError("the emulation compiles kernels/cuda/gpuproof.cu only")
        defines = tuple(o[2:] for o in options if o.startswith("-D"))
        self.lib = cuda_emu.library(defines)

    def get_function(self, name: str) -> Kernel:
        return Kernel(self.lib, name)


class Stream:
    def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
        self.ptr = 0

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def wait_event(self, event: Event) -> None:
        return None


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        pass

    def record(self, stream: Stream | None = None) -> None:
        return None

    def synchronize(self) -> None:
        return None


class Device:
    def __init__(self, device: int = 0) -> None:
        self.id = device

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _host_array(address: int, ctype, count: int) -> np.ndarray:  # noqa: ANN001
    return np.ctypeslib.as_array((ctype * count).from_address(address))


def gemm_ex(handle: int, transa: int, transb: int, m: int, n: int, k: int, alpha: int, a: int, a_type: int,
            lda: int, b: int, b_type: int, ldb: int, beta: int, c: int, c_type: int, ldc: int,
            compute_type: int, algo: int) -> None:
    """cublasGemmEx for the one case the backend uses: int8 x int8 -> int32, op(A) = A^T, op(B) = B."""
    if (transa, transb, a_type, b_type, c_type, compute_type) != (1, 0, 3, 3, 10, 72):
        raise NotImplementedError("only the TN int8 -> int32 CUBLAS_COMPUTE_32I form is emulated")
    if lda < k or ldb < k or ldc < m:
        raise ValueError(f"leading dimensions too small: lda={lda} ldb={ldb} ldc={ldc} for m={m} n={n} k={k}")
    alpha_v = int(_host_array(alpha, ctypes.c_int32, 1)[0])
    beta_v = int(_host_array(beta, ctypes.c_int32, 1)[0])
    # column-major: op(A)[i, l] = A[l + i*lda] (A^T of a k x m matrix), op(B)[l, j] = B[l + j*ldb]
    op_a = _host_array(a, ctypes.c_int8, (m - 1) * lda + k).copy()
    op_a = np.lib.stride_tricks.as_strided(op_a, shape=(m, k), strides=(lda, 1))
    op_b = _host_array(b, ctypes.c_int8, (n - 1) * ldb + k).copy()
    op_b = np.lib.stride_tricks.as_strided(op_b, shape=(n, k), strides=(ldb, 1)).T
    out = _host_array(c, ctypes.c_int32, (n - 1) * ldc + m)
    c_t = np.lib.stride_tricks.as_strided(out, shape=(n, m), strides=(4 * ldc, 4))  # C[i, j] at i + j*ldc
    product = op_a.astype(np.float64) @ op_b.astype(np.float64)  # exact: |sums| <= 2**14 * k << 2**53
    c_t[...] = (alpha_v * product.T + beta_v * c_t.astype(np.float64)).astype(np.int64).astype(np.int32)


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def modules() -> dict[str, types.ModuleType]:
    """sys.modules entries for cupy and the submodules the backend imports."""
    cublas = _module("cupy.cuda.cublas", CUBLAS_OP_N=0, CUBLAS_OP_T=1, gemmEx=gemm_ex,
                     setStream=lambda handle, stream: None)
    runtime = _module("cupy.cuda.runtime", getDeviceCount=lambda: 1,
                      getDeviceProperties=lambda dev: {"name": b"CPU emulation", "multiProcessorCount": 1},
                      runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0)
    device = _module("cupy.cuda.device", get_cublas_handle=lambda: 0)
    null = Stream(null=True)
    cuda = _module("cupy.cuda", Device=Device, Stream=Stream, Event=Event, cublas=cublas, runtime=runtime,
                   device=device, get_current_stream=lambda: null,
                   get_elapsed_time=lambda start, end: 1.0)
    cupy = _module("cupy", __version__="cpu-emulation", ndarray=FakeArray, cuda=cuda, RawModule=RawModule,
                   empty=empty, zeros=zeros, asarray=asarray, ascontiguousarray=ascontiguousarray,
                   is_available=lambda: True, int8=np.int8, int32=np.int32, uint8=np.uint8, uint64=np.uint64,
                   float32=np.float32)
    return {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.cublas": cublas, "cupy.cuda.runtime": runtime,
            "cupy.cuda.device": device}


def _forget_backend() -> None:
    """Drop kernels.cuda_backend (it holds the CuPy it was imported with), so the next import is fresh."""
    from gpuproof import kernels

    sys.modules.pop("gpuproof.kernels.cuda_backend", None)
    if hasattr(kernels, "cuda_backend"):
        delattr(kernels, "cuda_backend")


@contextlib.contextmanager
def installed(monkeypatch):  # noqa: ANN001
    """CuPy replaced by this stand-in, and kernels.cuda_backend imported afresh over it (and forgotten after)."""
    for name, module in modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    _forget_backend()
    try:
        yield
    finally:
        _forget_backend()
