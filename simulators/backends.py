"""Dishonest provers for `gpuproof demo` (hidden `--adversary` of `gpuproof agent run`): real agents over
real HTTP that cheat the way docs/threat-model.md describes, so the demo shows each one being caught.

skip-rows   computes only three rows in four of each C_r (the rest zero) and commits to that
replay-old  answers the first challenge honestly, then commits that challenge's roots to every later one
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from gpuproof.kernels.reference import CpuBackend, round_tree, row_path
from gpuproof.kernels.spec import ChallengeParams, prev_root_of


class SkipRows:
    name = "cpu-skip-rows"

    def __init__(self) -> None:
        self.inner = CpuBackend()

    def warm_up(self, shapes: Iterable[tuple[int, int, int]] = ()) -> None:
        self.inner.warm_up(shapes)

    def _c(self, params: ChallengeParams, r: int, prev: bytes) -> np.ndarray:
        c = self.inner.round_c(params, r, prev).copy()
        c[::4] = 0  # a quarter of the work never done
        return c

    def run(self, params: ChallengeParams, progress: Callable[[int], None] | None = None) -> list[bytes]:
        roots: list[bytes] = []
        for r in range(params.rounds):
            roots.append(round_tree(self._c(params, r, prev_root_of(roots, r))).root)
        return roots

    def open(self, params: ChallengeParams, round_index: int, row: int,
             roots: list[bytes] | None = None) -> tuple[np.ndarray, list[bytes]]:
        assert roots is not None
        c = self._c(params, round_index, prev_root_of(roots, round_index))
        return c[row].copy(), row_path(round_tree(c), params, row)


class ReplayOld:
    name = "cpu-replay-old"

    def __init__(self) -> None:
        self.inner = CpuBackend()
        self.old: tuple[ChallengeParams, list[bytes]] | None = None

    def warm_up(self, shapes: Iterable[tuple[int, int, int]] = ()) -> None:
        self.inner.warm_up(shapes)

    def run(self, params: ChallengeParams, progress: Callable[[int], None] | None = None) -> list[bytes]:
        if self.old is None or self.old[0].rounds != params.rounds:
            self.old = (params, self.inner.run(params))
        return list(self.old[1])

    def open(self, params: ChallengeParams, round_index: int, row: int,
             roots: list[bytes] | None = None) -> tuple[np.ndarray, list[bytes]]:
        assert self.old is not None
        old_params, old_roots = self.old
        return self.inner.open(old_params, round_index, row, old_roots)


ADVERSARIES = {"skip-rows": SkipRows, "replay-old": ReplayOld}
