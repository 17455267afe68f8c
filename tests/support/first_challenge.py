"""Times a fresh process's first challenges on one backend, as the agent's first ones are timed.

    python -m tests.support.first_challenge cpu|cuda-on-cpu m,n,k,rounds COUNT [--no-warm-up]

prints one JSON object: {"seconds": [the COUNT challenges' wall-clock times, in order], "cpu_seconds":
[their CPU times, this process's threads together], "warm_up_s": ...}. Each challenge has a fresh seed,
as from a gateway. It has to be a fresh process: the one-time costs that
warm_up pays (BLAS threads, first calls, kernel loading, buffers) are paid once per process, so a test
process that ran anything before cannot show them. `cuda-on-cpu` is the CUDA backend over CuPy's CPU
stand-in (tests/support/cupy_on_cpu.py).
"""

from __future__ import annotations

import json
import secrets
import sys
import time


def main(argv: list[str]) -> None:
    which, shape, count = argv[0], tuple(int(v) for v in argv[1].split(",")), int(argv[2])
    warm = "--no-warm-up" not in argv
    if which == "cuda-on-cpu":
        from tests.support import cupy_on_cpu

        sys.modules.update(cupy_on_cpu.modules())
        from gpuproof.kernels.cuda_backend import CudaBackend

        backend = CudaBackend(0)
    else:
        from gpuproof.kernels.reference import CpuBackend

        backend = CpuBackend()
    from gpuproof.kernels.spec import ChallengeParams

    m, n, k, rounds = shape
    started = time.perf_counter()
    if warm:
        backend.warm_up([(m, n, k)])
    warm_up_s = time.perf_counter() - started
    seconds, cpu_seconds = [], []
    for _ in range(count):
        params = ChallengeParams(secrets.token_bytes(32), m, n, k, rounds)
        started, cpu_started = time.perf_counter(), time.process_time()
        backend.run(params)
        cpu_seconds.append(time.process_time() - cpu_started)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "warm_up_s": warm_up_s if warm else None}))


if __name__ == "__main__":
    main(sys.argv[1:])
