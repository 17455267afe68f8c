"""gpuproof compute: spec gpuproof/1, its normative NumPy reference, RFC 6962 trees, and the CUDA backend.

Imports with NumPy alone; CuPy is imported only by `gpuproof.kernels.cuda_backend`, when a GPU backend is asked for.
"""

from gpuproof.kernels.backend import BACKENDS, Opening, select_backend
from gpuproof.kernels.errors import (
    BackendUnavailable,
    GpuproofError,
    InvalidParameter,
    OpeningRejected,
    ProofError,
)
from gpuproof.kernels.spec import SPEC, ChallengeParams, parse_seed

__all__ = [
    "BACKENDS",
    "SPEC",
    "BackendUnavailable",
    "ChallengeParams",
    "GpuproofError",
    "InvalidParameter",
    "Opening",
    "OpeningRejected",
    "ProofError",
    "parse_seed",
    "select_backend",
]
