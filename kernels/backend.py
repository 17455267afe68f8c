"""Backend selection and the opening object shared by every backend.

`auto` picks `cuda` when CuPy imports and sees a GPU, else `cpu`. CuPy is imported only inside
`gpuproof.kernels.cuda_backend`, so this package imports with NumPy alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from gpuproof.kernels.errors import BackendUnavailable, InvalidParameter
from gpuproof.kernels.merkle import HASH_BYTES
from gpuproof.kernels.spec import ChallengeParams

BACKENDS = ("auto", "cpu", "cuda")

Shape = tuple[int, int, int]  # (m, n, k) of a challenge; rounds do not change what a backend allocates


class Backend(Protocol):
    name: str

    def warm_up(self, shapes: Iterable[Shape] = ()) -> None:
        """Pay every one-time cost before the first timed challenge: compile and load kernels, create
        library handles and thread pools, allocate and keep buffers for `shapes`, and run one untimed
        round. Call it on the thread that will run the challenges (CuPy's cuBLAS handles are per thread).
        """
        ...

    def run(self, params: ChallengeParams,
            progress: Callable[[int], None] | None = None) -> list[bytes]: ...

    def open(self, params: ChallengeParams, round_index: int, row: int,
             roots: list[bytes] | None = None) -> tuple[np.ndarray, list[bytes]]: ...


@dataclass(frozen=True)
class Opening:
    """One opened (round, row): the row's n int32 values and its audit path up to root_r.

    Always well-formed on construction (types, int32 range, 32-byte path hashes); whether it is *right*
    is what `gpuproof.verifier.openings.verify_opening` decides.
    """

    round: int
    row: int
    values: np.ndarray
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        for name in ("round", "row"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidParameter(name, f"expected a non-negative integer, got {v!r}")
        values = np.asarray(self.values)
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise InvalidParameter("values", f"expected a flat list of integers, got shape {values.shape} "
                                             f"of {values.dtype}")
        if values.size and (values.min() < -2**31 or values.max() > 2**31 - 1):
            raise InvalidParameter("values", "a value is outside the int32 range")
        object.__setattr__(self, "values", values.astype(np.int32))
        path = tuple(self.path)
        for i, h in enumerate(path):
            if not isinstance(h, bytes) or len(h) != HASH_BYTES:
                raise InvalidParameter("path", f"element {i} is not a 32-byte hash")
        object.__setattr__(self, "path", path)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "row": self.row, "values": [int(v) for v in self.values],
                "path": [h.hex() for h in self.path]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Opening:
        """Parse the wire form; every field is checked (hex once, at the edge)."""
        if not isinstance(data, dict):
            raise InvalidParameter("opening", "expected an object")
        for key in ("round", "row", "values", "path"):
            if key not in data:
                raise InvalidParameter("opening", f"missing field {key!r}")
        values = data["values"]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in values):
            raise InvalidParameter("values", "expected a list of integers")
        path_hex = data["path"]
        if not isinstance(path_hex, list) or not all(isinstance(h, str) for h in path_hex):
            raise InvalidParameter("path", "expected a list of hex strings")
        try:
            path = tuple(bytes.fromhex(h) for h in path_hex)
        except ValueError:
            raise InvalidParameter("path", "an element is not hex") from None
        if values and (min(values) < -2**31 or max(values) > 2**31 - 1):
            raise InvalidParameter("values", "a value is outside the int32 range")
        return cls(data["round"], data["row"], np.array(values, dtype=np.int64), path)


def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether the CUDA backend can run here, and why not when it cannot."""
    try:
        import cupy  # noqa: F401  (import only to probe)
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc}); install gpuproof[gpu-cuda13]"
    try:
        if not cupy.is_available():
            return False, "CuPy is installed but sees no CUDA GPU"
    except Exception as exc:
        return False, f"CuPy cannot query the GPU ({exc})"
    return True, "ok"


def select_backend(name: str = "auto", device: int = 0) -> Backend:
    """The backend called `name` (auto, cpu, cuda) on GPU `device`.

    Raises InvalidParameter for an unknown name, BackendUnavailable when cuda is asked for and cannot run.
    """
    if name not in BACKENDS:
        raise InvalidParameter("--backend", f"expected one of {', '.join(BACKENDS)}, got {name!r}")
    if name in ("auto", "cuda"):
        usable, reason = cuda_status()
        if usable:
            from gpuproof.kernels.cuda_backend import CudaBackend

            return CudaBackend(device)
        if name == "cuda":
            raise BackendUnavailable(f"--backend cuda: {reason}")
    from gpuproof.kernels.reference import CpuBackend

    return CpuBackend()
