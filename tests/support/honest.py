"""An honest prover's openings, as the tests' providers send them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpuproof.kernels.backend import Opening
from gpuproof.kernels.reference import CpuBackend
from gpuproof.kernels.spec import ChallengeParams


def openings(params: ChallengeParams, roots: Sequence[bytes], pairs: Iterable[Sequence[int]]) -> list[dict]:
    """The requested rows (each (round, row) once, in order) with their audit paths, as wire JSON."""
    out, backend = [], CpuBackend()  # one backend: it recomputes each round once, not once per row
    for r, i in sorted({(int(p[0]), int(p[1])) for p in pairs}):
        values, path = backend.open(params, r, i, roots)
        out.append(Opening(r, i, values, tuple(path)).to_json())
    return out
