"""What a cheap cheat costs the verifier (issue 18): a default-size H100 challenge answered with one
constant root (the root of an all-zero matrix, the same for every round) and all-zero rows with valid
paths, which costs the prover about 2 ms. Prints Verifier.judge's time on it beside the work an honest
answer of the same size costs the verifier (y = B.T x once, then A_r[row] and a dot product per opened
row, what judge does for a passing challenge) and beside judge on an honest small challenge.

    .venv/bin/python bench/cheap_cheat_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gpuproof.kernels import merkle
from gpuproof.kernels.backend import Opening
from gpuproof.simulators.protocol import Honest, run_strategy
from gpuproof.verifier import freivalds
from gpuproof.verifier.openings import prev_root_of, row_subtree_root
from gpuproof.verifier.protocol import Verifier


def zero_answer(v: Verifier, model: str = "NVIDIA H100 80GB HBM3"):  # noqa: ANN201
    challenge = v.issue(model, now=0.0)
    p = challenge.params
    zeros = np.zeros(p.n, dtype=np.int64)
    node, path = row_subtree_root(zeros), []
    for _ in range(int(np.log2(p.m))):  # m is a power of two: every sibling is the zero subtree's root
        path.append(node)
        node = merkle.node_hash(node, node)
    commitment = v.commit(challenge, [node] * p.rounds, received_at=challenge.thresholds.expected_s)
    request = v.request_openings(challenge, commitment)
    return challenge, commitment, request, [Opening(r, i, zeros, tuple(path)) for r, i in request.pairs]


def best(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    v = Verifier()
    challenge, commitment, request, openings = zero_answer(v)
    p = challenge.params
    verdict = v.judge(challenge, commitment, request, openings)
    print(f"challenge m={p.m} n={p.n} k={p.k} rounds={p.rounds}, {len(request.pairs)} opened rows; "
          f"verdict {verdict.outcome}: {verdict.failure.reason if verdict.failure else '-'}")
    cheat = best(lambda: v.judge(challenge, commitment, request, openings), args.repeat)

    def honest_work() -> None:
        y = freivalds.y_vector(p, request.x)
        for r, i in request.pairs:
            a = freivalds.a_row(p, r, prev_root_of(commitment.roots, r), i)
            freivalds.row_passes(openings[0].values, request.x, a, y)
            row_subtree_root(openings[0].values)

    honest = best(honest_work, args.repeat)
    small = best(lambda: run_strategy(Honest(), v, shape=(16, 256, 64, 3)), args.repeat)
    print(f"judge, zero-row cheat at this size:        {cheat * 1e3:8.1f} ms")
    print(f"verifier work of an honest answer, same size: {honest * 1e3:8.1f} ms")
    print(f"ratio cheat / honest:                      {cheat / honest:8.2f}")
    print(f"a whole honest small challenge (16,256,64,3): {small * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
