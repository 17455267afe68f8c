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


def memory_prover(c: dict, params: ChallengeParams, roots: Sequence[bytes]):  # noqa: ANN201
    """The honest prover's table for a challenge with a memory phase (its wire form's "memory"), or None."""
    from gpuproof.kernels.memory import MemoryPlan, prover_for

    m = c.get("memory")
    if m is None:
        return None
    return prover_for(CpuBackend(), MemoryPlan(params, m["table_rounds"], m["lanes"], m["steps"], m["opened"]),
                      roots)


def walk(prover, params: ChallengeParams, roots: Sequence[bytes], nonce_hex: str) -> tuple[bytes, bytes]:  # noqa: ANN001
    """(walk key, walk root) of an honest walk from the opening request's nonce."""
    from gpuproof.kernels.memory import walk_key

    wk = walk_key(params.seed, roots[-1], bytes.fromhex(nonce_hex))
    return wk, prover.run_walk(wk)


def lanes(prover, wk: bytes, drawn: Iterable[int]) -> list[dict]:  # noqa: ANN001
    """The drawn lanes opened, in the order drawn, as wire JSON."""
    return [prover.open(int(lane), wk).to_json() for lane in drawn]
