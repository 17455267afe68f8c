"""CUDA backend of specs gpuproof/1 and gpuproof/2: custom kernels (kernels/cuda/gpuproof.cu) plus cuBLAS
int8 GEMM.

Imported only when a GPU backend is asked for (kernels.backend.select_backend). One round on the device:
round_key (rs_r from the previous root, on the GPU; round_key_v2 in v2) -> gen_nibbles (A_r; gen_bytes in
v2) -> cuBLAS gemmEx int8 -> int32
"TN" (C_r = A_r @ B.T) -> leaf_hash_1k -> merkle_levels (root_r into the roots array), as laid out by a
launch plan (kernels/cuda_plan.py: sequential by default, or pipelined over two streams).
Rounds are chained on the device; only the R 32-byte roots come back to the host. Buffers are allocated
once per shape (m, n, k) and kept across rounds and challenges; a new seed only regenerates B in place.
`CudaBackend.warm_up` pays compilation, module loading, the cuBLAS handle and the buffers before the
first timed challenge. Never `cupy.matmul` on int8: it is not cuBLAS and wraps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from importlib import resources

import cupy
import numpy as np
from gpuproof.kernels import cuda_plan, merkle, spec
from gpuproof.kernels.cuda_plan import (
    DEFAULT_LEVELS_PER_LAUNCH,
    GEN_THREADS,
    LEAF_CHUNKS_PER_BLOCK,
    LEVEL_NODES_PER_BLOCK,
    M_ALIGN,
    CopyRoot,
    Gemm,
    Gen,
    Geometry,
    Leaves,
    Levels,
    Record,
    RoundKey,
    Step,
    Wait,
)
from gpuproof.kernels.errors import BackendUnavailable
from gpuproof.kernels.spec import SPEC_V1, SPEC_V2, ChallengeParams

CUDA_R_8I = 3
CUDA_R_32I = 10
CUBLAS_COMPUTE_32I = 72
CUBLAS_GEMM_DEFAULT = -1

_NULL = np.uintp(0)  # a null device pointer for optional kernel arguments
WARM_SHAPE = (256, 256, 1024)  # warm_up's round when no shape is named: small, and every kernel runs
WARM_ROUNDS = 4096  # roots warm_up makes room for (128 KiB): a longer challenge grows them once
_modules: dict[tuple[int, tuple[str, ...]], cupy.RawModule] = {}
_modules_lock = threading.Lock()


def kernel_source() -> str:
    """The CUDA source shipped as package data."""
    return resources.files("gpuproof.kernels.cuda").joinpath("gpuproof.cu").read_text()


def _module(device_id: int, defines: tuple[str, ...] = ()) -> cupy.RawModule:
    """The compiled module for one device: compiled lazily, once per device (and define set), cached.

    `defines` ("GP_ADD_FMA=1", ...) select kernel variants for bench/kernel_variants.py; the defaults
    in the source are the measured best.
    """
    with _modules_lock:
        module = _modules.get((device_id, defines))
        if module is None:
            options = ("-std=c++17",) + tuple(f"-D{d}" for d in defines)
            module = cupy.RawModule(code=kernel_source(), options=options)
            _modules[(device_id, defines)] = module
        return module


class CudaKernels:
    """Thin launchers, one per entry point, on one device. All work goes on the current stream."""

    def __init__(self, device_id: int, defines: tuple[str, ...] = ()) -> None:
        self.device_id = device_id
        try:
            from cupy.cuda import cublas
        except ImportError as exc:  # CuPy finds the GPU but not libcublas
            raise BackendUnavailable(f"cuBLAS cannot be loaded ({exc}); install CUDA's cuBLAS") from None
        self._cublas = cublas
        module = _module(device_id, defines)
        with cupy.cuda.Device(device_id):
            self._round_key = {SPEC_V1: module.get_function("round_key"),
                               SPEC_V2: module.get_function("round_key_v2")}
            self._gen = {SPEC_V1: module.get_function("gen_nibbles"), SPEC_V2: module.get_function("gen_bytes")}
            self._leaf = module.get_function("leaf_hash_1k")
            self._levels = module.get_function("merkle_levels")
            self._copy = module.get_function("copy_hash")
        self._one = np.array(1, dtype=np.int32)
        self._zero = np.array(0, dtype=np.int32)

    def round_key(self, seed_d: cupy.ndarray, round_index: int, prev_root_d: cupy.ndarray,
                  key_out: cupy.ndarray, spec: str = SPEC_V1) -> None:
        """key_out (2 x uint64) = Philox key words of A_r in `spec`, from rs_r computed on the device."""
        self._round_key[spec]((1,), (1,), (seed_d, np.uint32(round_index), prev_root_d, key_out))

    def gen(self, out: cupy.ndarray, key_d: cupy.ndarray, first_block: int = 0, spec: str = SPEC_V1) -> None:
        """Fill int8 `out` with `spec`'s value stream from Philox block first_block: nibbles (v1, 64 values
        a block) or bytes (v2, 32 values a block); `out` holds a whole number of blocks."""
        per_block = cuda_plan.values_per_block(spec)
        if out.size % per_block:
            raise ValueError(f"output of {out.size} values is not a whole number of {per_block}-value blocks")
        blocks = out.size // per_block
        if blocks == 0:
            return
        self._gen[spec]((cuda_plan.gen_grid(blocks),), (GEN_THREADS,),
                        (out, key_d, np.uint64(first_block), np.uint64(blocks)))

    def leaf_hashes(self, data: cupy.ndarray, n_chunks: int, out: cupy.ndarray) -> None:
        """out[32*i : 32*i+32] = SHA-256(0x00 || data[1024*i : 1024*i+1024]) for i < n_chunks."""
        if n_chunks == 0:
            return
        self._leaf((cuda_plan.leaf_grid(n_chunks),), (LEAF_CHUNKS_PER_BLOCK,), (data, np.uint64(n_chunks), out))

    def levels(self, levels: cupy.ndarray, leaves: int, step: Levels, root_out: cupy.ndarray | None) -> None:
        """One merkle_levels launch: the levels above nodes [step.first, step.end) of level step.start."""
        out = root_out if (step.root and root_out is not None) else _NULL
        self._levels((step.blocks,), (LEVEL_NODES_PER_BLOCK // 2,),
                     (levels, np.uint64(leaves), np.int32(step.start), np.int32(step.count),
                      np.uint64(step.first), np.uint64(step.end), out))

    def build_levels(self, levels: cupy.ndarray, leaves: int, per_launch: int = DEFAULT_LEVELS_PER_LAUNCH,
                     root_out: cupy.ndarray | None = None) -> int:
        """Fill every level above level 0 of the buffer; returns the root's offset (in hashes).

        With `root_out` (32 bytes on the device) the root is also copied there, by the last launch.
        """
        sizes, offsets = merkle.level_layout(leaves)
        height = len(sizes) - 1
        if height == 0 and root_out is not None:  # one leaf: its hash is the root
            self.copy_hash(levels[:32], root_out)
        for step in cuda_plan.tree_steps(0, leaves, 0, 0, leaves, height, per_launch, root=True):
            assert isinstance(step, Levels)
            self.levels(levels, leaves, step, root_out)
        return offsets[-1]

    def copy_hash(self, src: cupy.ndarray, dst: cupy.ndarray) -> None:
        self._copy((1,), (32,), (src, dst))

    def gemm(self, a: cupy.ndarray, b: cupy.ndarray, c: cupy.ndarray) -> None:
        """C (M x N, int32) = A (M x K, int8) @ B (N x K, int8).T through cuBLAS gemmEx, "TN" form.

        cuBLAS is column-major: row-major C (M x N) is column-major C.T (N x M) = B @ A.T, and row-major
        B and A are column-major K x N and K x M, so cuBLAS gets op(B) = transpose, op(A) = none. Both
        operands are K-contiguous, the layout the int8 tensor-core kernels want.
        """
        m, k = a.shape
        n = b.shape[0]
        cublas = self._cublas
        handle = cupy.cuda.device.get_cublas_handle()
        cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
        cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n, m, k,
                      self._one.ctypes.data, b.data.ptr, CUDA_R_8I, k,
                      a.data.ptr, CUDA_R_8I, k,
                      self._zero.ctypes.data, c.data.ptr, CUDA_R_32I, n,
                      CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT)


class ChallengeBuffers:
    """Device buffers for one shape (m, n, k), allocated once and reused by every round of every challenge
    of that shape; `load_seed` makes them a challenge's (its seed, its B), `ensure_rounds` fits the roots."""

    def __init__(self, params: ChallengeParams) -> None:
        self.params = params
        self.shape_key = (params.m, params.n, params.k)
        self.m_pad = Geometry.of(params).m_pad
        self.leaves = params.leaves_per_round
        self.sizes, self.offsets = merkle.level_layout(self.leaves)
        self.a = cupy.empty((self.m_pad, params.k), dtype=cupy.int8)
        self.b = cupy.empty((params.n, params.k), dtype=cupy.int8)
        self.c = cupy.empty((self.m_pad, params.n), dtype=cupy.int32)
        self.levels = cupy.empty(sum(self.sizes) * 32, dtype=cupy.uint8)
        self.seed = cupy.asarray(np.frombuffer(params.seed, dtype=np.uint8))
        self.roots = cupy.zeros((params.rounds + 1, 32), dtype=cupy.uint8)  # row 0: the zero root
        self.key_a = cupy.empty(2, dtype=cupy.uint64)
        self.key_b = cupy.empty(2, dtype=cupy.uint64)
        self.b_seed: tuple[bytes, str] | None = None  # the (seed, spec) whose B is in `b` (none yet)

    def load_seed(self, params: ChallengeParams, kernels: CudaKernels) -> None:
        """Make the buffers this challenge's: its seed and its B, regenerated in place (once per seed and spec)."""
        self.params = params
        if self.b_seed != (params.seed, params.spec):
            self.seed.set(np.frombuffer(params.seed, dtype=np.uint8))
            self.key_b.set(np.array(spec.key_words(spec.b_key(params.seed, params.spec)), dtype=np.uint64))
            kernels.gen(self.b, self.key_b, 0, params.spec)
            self.b_seed = (params.seed, params.spec)

    def ensure_rounds(self, rounds: int) -> None:
        """Room for `rounds` roots after the zero root (row 0, never written but by an opening of round 0)."""
        if self.roots.shape[0] < rounds + 1:
            self.roots = cupy.zeros((rounds + 1, 32), dtype=cupy.uint8)


class CudaBackend:
    """Runs challenges on one GPU. Roots are byte-identical to kernels.reference.CpuBackend's.

    `pieces` > 1 runs each round as the pipelined plan of kernels/cuda_plan.py (that many row pieces,
    hashing on a second stream beside the GEMM); the default 1 is the sequential plan. `per_launch`:
    tree levels per merkle_levels launch (1..9).
    """

    name = "cuda"

    def __init__(self, device: int = 0, pieces: int = 1, per_launch: int = DEFAULT_LEVELS_PER_LAUNCH) -> None:
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= device < count:
            raise BackendUnavailable(f"--device {device}: this machine has {count} CUDA device(s)")
        if pieces < 1:
            raise ValueError(f"pieces must be at least 1, got {pieces}")
        if not 1 <= per_launch <= cuda_plan.MAX_LEVELS_PER_LAUNCH:
            raise ValueError(f"levels per launch must be in 1..{cuda_plan.MAX_LEVELS_PER_LAUNCH}, got {per_launch}")
        self.device = device
        self.pieces = pieces
        self.per_launch = per_launch
        with cupy.cuda.Device(device):
            self.kernels = CudaKernels(device)
            self._hash_stream = cupy.cuda.Stream(non_blocking=True) if pieces > 1 else None
        self._events: dict[int, cupy.cuda.Event] = {}
        self._buffers: ChallengeBuffers | None = None
        self._plan: tuple[Geometry, list[Step]] | None = None

    def warm_up(self, shapes: Iterable[tuple[int, int, int]] = ()) -> None:
        """One untimed round per shape (m, n, k) (WARM_SHAPE when none is given), on this device.

        It compiles the kernels if they are not yet (CudaKernels did at construction), loads the module into
        the context and launches every kernel once, creates this thread's cuBLAS handle and lets cuBLAS
        pick its int8 kernel, makes the launch plan and its events, and allocates the buffers, which the
        next challenge of the last shape reuses, with room for WARM_ROUNDS roots (an earlier shape's memory
        goes back to CuPy's pool, from which the same sizes come back without a cudaMalloc). A challenge of
        a shape not warmed pays its allocation once. Call it on the thread that will run the challenges:
        CuPy's cuBLAS handles are per thread.
        """
        with cupy.cuda.Device(self.device):
            for m, n, k in list(shapes) or [WARM_SHAPE]:
                version = spec.SPEC if k <= spec.definition(spec.SPEC).max_k else SPEC_V1
                self.run(ChallengeParams(bytes(32), m, n, k, 1, spec=version))
            if self._buffers is not None:
                self._buffers.ensure_rounds(WARM_ROUNDS)
            cupy.cuda.get_current_stream().synchronize()

    def _buffers_for(self, params: ChallengeParams) -> ChallengeBuffers:
        if self._buffers is None or self._buffers.shape_key != (params.m, params.n, params.k):
            self._buffers = None  # free the old shape's memory first
            self._buffers = ChallengeBuffers(params)
        self._buffers.load_seed(params, self.kernels)
        self._buffers.ensure_rounds(params.rounds)
        return self._buffers

    def plan(self, params: ChallengeParams) -> list[Step]:
        """The launch plan of one round of this challenge's shape (cached per shape)."""
        geo = Geometry.of(params)
        if self._plan is None or self._plan[0] != geo:
            self._plan = (geo, cuda_plan.round_plan(geo, self.pieces, M_ALIGN, self.per_launch))
        return self._plan[1]

    def _event(self, event_id: int) -> cupy.cuda.Event:
        if event_id not in self._events:
            self._events[event_id] = cupy.cuda.Event(block=False, disable_timing=True)
        return self._events[event_id]

    def _round(self, bufs: ChallengeBuffers, round_index: int) -> None:
        """Enqueue round r: reads roots[r] (root_{r-1}), writes roots[r+1] (root_r).

        Stream 0 of the plan is the caller's current stream; every plan ends with stream 0 waiting for
        everything it started, so the caller sees one stream.
        """
        k, leaves, version = bufs.params.k, bufs.leaves, bufs.params.spec
        per_block = cuda_plan.values_per_block(version)
        kern = self.kernels
        streams = {0: cupy.cuda.get_current_stream(), 1: self._hash_stream}
        root_out = bufs.roots[round_index + 1]
        for step in self.plan(bufs.params):
            with streams[step.stream]:
                match step:
                    case RoundKey():
                        kern.round_key(bufs.seed, round_index, bufs.roots[round_index], bufs.key_a, version)
                    case Gen(r0=r0, r1=r1):
                        kern.gen(bufs.a[r0:r1], bufs.key_a, r0 * k // per_block, version)
                    case Gemm(r0=r0, r1=r1):
                        kern.gemm(bufs.a[r0:r1], bufs.b, bufs.c[r0:r1])
                    case Leaves(a=a, b=b):
                        kern.leaf_hashes(bufs.c.reshape(-1)[a * 256:], b - a, bufs.levels[a * 32:b * 32])
                    case Levels():
                        kern.levels(bufs.levels, leaves, step, root_out)
                    case CopyRoot():
                        kern.copy_hash(bufs.levels[:32], root_out)
                    case Record(event=event):
                        self._event(event).record(streams[step.stream])
                    case Wait(event=event):
                        streams[step.stream].wait_event(self._event(event))

    def run(self, params: ChallengeParams,
            progress: Callable[[int], None] | None = None) -> list[bytes]:
        """All R roots; the rounds are enqueued back to back, and the roots copied back once."""
        with cupy.cuda.Device(self.device):
            bufs = self._buffers_for(params)
            for r in range(params.rounds):
                self._round(bufs, r)
                if progress is not None:
                    cupy.cuda.get_current_stream().synchronize()
                    progress(r + 1)
            host = bufs.roots[1:params.rounds + 1].get()
        return [bytes(row) for row in host]

    def round_device(self, params: ChallengeParams, round_index: int, roots: list[bytes]) -> cupy.ndarray:
        """C_r of one round on the device (m x n int32), recomputed from the committed roots: a view of the
        backend's buffer, valid until its next round (copy it to keep it). Call inside `cupy.cuda.Device`."""
        bufs = self._buffers_for(params)
        bufs.roots[round_index] = cupy.asarray(np.frombuffer(spec.prev_root_of(roots, round_index), dtype=np.uint8))
        self._round(bufs, round_index)
        return bufs.c[:params.m]

    def round_tree(self, params: ChallengeParams, round_index: int, roots: list[bytes]) -> merkle.MerkleTree:
        """Round `round_index`'s whole tree on the host (its levels computed on the device), for leaf paths."""
        with cupy.cuda.Device(self.device):
            self.round_device(params, round_index, roots)
            bufs = self._buffers_for(params)
            host_levels = [bufs.levels[off * 32:(off + size) * 32].get().tobytes()
                           for off, size in zip(bufs.offsets, bufs.sizes, strict=True)]
        return merkle.tree_from_levels(host_levels)

    def open(self, params: ChallengeParams, round_index: int, row: int,
             roots: list[bytes] | None = None) -> tuple[np.ndarray, list[bytes]]:
        """Row `row` of C_r and its audit path, recomputing round `round_index` on the device."""
        if roots is None:
            roots = self.run(params.with_rounds(round_index + 1))
        with cupy.cuda.Device(self.device):
            bufs = self._buffers_for(params)
            bufs.roots[round_index] = cupy.asarray(np.frombuffer(spec.prev_root_of(roots, round_index),
                                                                dtype=np.uint8))
            self._round(bufs, round_index)
            values = bufs.c[row].get()
            inside = params.chunks_per_row.bit_length() - 1
            host_levels = [bufs.levels[off * 32:(off + size) * 32].get().tobytes()
                           for off, size in zip(bufs.offsets[inside:], bufs.sizes[inside:], strict=True)]
        path = merkle.tree_from_levels(host_levels).inclusion_proof(row)
        return values, path
