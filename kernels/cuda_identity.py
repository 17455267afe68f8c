"""Bit-identity checks of every CUDA kernel against the NumPy reference (needs CuPy and a GPU).

Used by tests/kernels/test_cuda.py and bench/device_check.py, and usable by a provider to check a GPU
before it answers challenges. Each check returns `Check` records; a check never raises on a mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from gpuproof.kernels import merkle, reference, spec
from gpuproof.kernels.spec import ChallengeParams


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def _first_diff(got: np.ndarray, want: np.ndarray) -> str:
    got, want = np.asarray(got).ravel(), np.asarray(want).ravel()
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    idx = np.flatnonzero(got != want)
    return "identical" if idx.size == 0 else f"{idx.size} differ, first at {idx[0]}: {got[idx[0]]} != {want[idx[0]]}"


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> Check:
    same = np.asarray(got).shape == np.asarray(want).shape and np.array_equal(got, want)
    return Check(name, bool(same), "identical" if same else _first_diff(got, want))


def check_philox(rng: np.random.Generator) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaKernels

    kern = CudaKernels(cupy.cuda.Device().id)
    key16 = np.array([1, 2], dtype="<u8").tobytes()
    out = cupy.empty(64 * 4, dtype=cupy.int8)
    kern.gen(out, cupy.asarray(np.array([1, 2], dtype=np.uint64)))
    yield _compare("philox spec vector key (1, 2)", out.get(), reference.nibble_values(key16, 256))
    for rows, k, offset in [(1, 64, 0), (3, 192, 5), (17, 640, 1000), (256, 1024, 3), (1, 32768, 777),
                            (40, 2**20, 2), (1000, 4096, 123456)]:
        key16 = rng.bytes(16)
        out = cupy.empty((rows, k), dtype=cupy.int8)
        kern.gen(out, cupy.asarray(np.array(spec.key_words(key16), dtype=np.uint64)), offset * k // 64)
        want = reference.nibble_matrix(key16, rows, k, row_offset=offset)
        yield _compare(f"philox rows={rows} k={k} row_offset={offset}", out.get(), want)


def check_round_key(rng: np.random.Generator) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaKernels

    kern = CudaKernels(cupy.cuda.Device().id)
    for r in [0, 1, 7, 2**31 + 5]:
        seed, prev = rng.bytes(32), (bytes(32) if r == 0 else rng.bytes(32))
        key = cupy.empty(2, dtype=cupy.uint64)
        kern.round_key(cupy.asarray(np.frombuffer(seed, np.uint8)), r,
                       cupy.asarray(np.frombuffer(prev, np.uint8)), key)
        want = np.array(spec.key_words(spec.a_key(seed, r, prev)), dtype=np.uint64)
        yield _compare(f"round_key r={r}", key.get(), want)


def check_leaf_hashes(rng: np.random.Generator) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaKernels

    kern = CudaKernels(cupy.cuda.Device().id)
    for chunks in [1, 31, 32, 33, 127, 128, 129, 1000, 4099]:
        data = rng.bytes(1024 * chunks)
        out = cupy.zeros(32 * chunks, dtype=cupy.uint8)
        kern.leaf_hashes(cupy.asarray(np.frombuffer(data, np.uint8)), chunks, out)
        want = np.frombuffer(merkle.hash_chunks(data, 1024), np.uint8)
        yield _compare(f"leaf_hash_1k chunks={chunks}", out.get(), want)
    # The spec's own leaf: one chunk of zeros must hash like hashlib's SHA-256(0x00 || 1024 zero bytes).
    out = cupy.zeros(32, dtype=cupy.uint8)
    kern.leaf_hashes(cupy.zeros(1024, dtype=cupy.uint8), 1, out)
    yield _compare("leaf_hash_1k zero chunk vs hashlib", out.get(),
                   np.frombuffer(hashlib.sha256(bytes(1025)).digest(), np.uint8))


def check_levels(rng: np.random.Generator) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaKernels

    kern = CudaKernels(cupy.cuda.Device().id)
    for leaves in [1, 2, 3, 5, 255, 256, 300, 511, 512, 513, 1000, 4097, 262144 + 3]:
        hashes = rng.bytes(32 * leaves)
        sizes, _ = merkle.level_layout(leaves)
        buf = cupy.zeros(sum(sizes) * 32, dtype=cupy.uint8)
        buf[: 32 * leaves] = cupy.asarray(np.frombuffer(hashes, np.uint8))
        root = cupy.zeros(32, dtype=cupy.uint8)
        top = kern.build_levels(buf, leaves, per_launch=6 if leaves % 2 else 9, root_out=root)
        tree = merkle.MerkleTree(hashes)
        want = np.frombuffer(b"".join(tree.level(h) for h in range(len(sizes))), np.uint8)
        got = buf.get()
        yield _compare(f"merkle_levels leaves={leaves} (all levels)", got, want)
        yield Check(f"merkle_levels leaves={leaves} root", got[top * 32:(top + 1) * 32].tobytes() == tree.root)
        yield Check(f"merkle_levels leaves={leaves} root_out", root.get().tobytes() == tree.root)


def check_gemm(rng: np.random.Generator) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaKernels

    kern = CudaKernels(cupy.cuda.Device().id)
    for m, n, k, lo, hi in [(16, 256, 64, -8, 8), (112, 512, 192, -8, 8), (1024, 1024, 1024, -8, 8),
                            (64, 256, 32768, -8, 8), (32, 256, 4096, -128, 128)]:
        a = rng.integers(lo, hi, size=(m, k), dtype=np.int8)
        b = rng.integers(lo, hi, size=(n, k), dtype=np.int8)
        c = cupy.empty((m, n), dtype=cupy.int32)
        kern.gemm(cupy.asarray(a), cupy.asarray(b), c)
        want = (a.astype(np.int64) @ b.astype(np.int64).T).astype(np.int32)
        yield _compare(f"gemmEx int8 m={m} n={n} k={k} values [{lo},{hi})", c.get(), want)


def check_challenges(rng: np.random.Generator, vectors: list[dict] | None = None) -> Iterator[Check]:
    import cupy
    from gpuproof.kernels.cuda_backend import CudaBackend

    cpu = reference.CpuBackend()
    # pieces=1: the sequential launch plan; 4 and 8: the pipelined one (two streams, kernels/cuda_plan.py)
    for pieces in (1, 4, 8):
        gpu = CudaBackend(cupy.cuda.Device().id, pieces=pieces)
        plan = f" pieces={pieces}" if pieces > 1 else ""
        for v in vectors or []:
            params = ChallengeParams.from_json(v)
            got_hex = [r.hex() for r in gpu.run(params)]
            yield Check(f"challenge vector {v['desc']}{plan}", got_hex == v["roots"], f"{got_hex} vs {v['roots']}")
        for m, n, k, rounds in [(8, 256, 64, 3), (100, 512, 192, 2), (200, 1024, 640, 3), (37, 2048, 128, 2),
                                (1000, 8192, 256, 2)]:
            params = ChallengeParams(rng.bytes(32), m, n, k, rounds)
            want = cpu.run(params)
            got = gpu.run(params)
            yield Check(f"challenge m={m} n={n} k={k} R={rounds}{plan} roots", got == want)
            for r, row in [(rounds - 1, m - 1), (0, 0), (rounds // 2, m // 2)]:
                gv, gp = gpu.open(params, r, row, got)
                cv, cp = cpu.open(params, r, row, want)
                yield Check(f"open m={m} n={n} round={r} row={row}{plan}", np.array_equal(gv, cv) and gp == cp)


ALL_CHECKS: dict[str, Callable[..., Iterator[Check]]] = {
    "philox": check_philox,
    "round_key": check_round_key,
    "leaf_hashes": check_leaf_hashes,
    "levels": check_levels,
    "gemm": check_gemm,
    "challenges": check_challenges,
}
