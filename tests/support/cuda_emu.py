"""The CUDA kernels of kernels/cuda/gpuproof.cu compiled for the host and run on the CPU (no GPU needed).

`cuda_emu/shim.h` maps the CUDA features the source uses onto C++20 (one OS thread per CUDA thread,
barriers for __syncthreads/__syncwarp); `cuda_emu/launch.cpp` wraps each kernel for ctypes. The grids
come from kernels.cuda_plan, as in kernels/cuda_backend.py. `EmuBackend` runs whole rounds from the
same launch plans as the CUDA backend, each step in a random order its streams and events allow, so a
missing wait or a wrong range shows as a wrong root. What this cannot show: timing, the GPU memory
model, register or shared-memory limits (bench/device_check.py on a GPU checks those).
"""

from __future__ import annotations

import ctypes
import hashlib
import random
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from gpuproof.kernels import cuda_plan, merkle, reference
from gpuproof.kernels.cuda_plan import (
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
from gpuproof.kernels.spec import SPEC_V1, SPEC_V2, ChallengeParams

HERE = Path(__file__).parent / "cuda_emu"
_libs: dict[tuple[str, ...], ctypes.CDLL] = {}


def compiler_reason() -> str | None:
    """None when g++ can build the emulation, else why not."""
    return None if shutil.which("g++") else "g++ is not on PATH (the CUDA emulation compiles the kernels with it)"


def library(defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The kernels compiled for the host with `defines` (the source's variant switches, "GP_T1_FMA=1"),
    built once per source version and define set, cached in the temp dir."""
    if defines in _libs:
        return _libs[defines]
    source = Path(str(resources.files("gpuproof.kernels.cuda").joinpath("gpuproof.cu")))
    digest = hashlib.sha256(source.read_bytes() + (HERE / "shim.h").read_bytes()
                            + (HERE / "launch.cpp").read_bytes() + repr(defines).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"gpuproof-cuda-emu-{digest}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{random.getrandbits(32):08x}.tmp")
        cmd = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
               "-Wno-unknown-pragmas", f'-DGP_SOURCE="{source}"', *[f"-D{d}" for d in defines], "-I", str(HERE),
               "-x", "c++", str(HERE / "launch.cpp"), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"the CUDA emulation does not compile:\n{done.stderr}")
        tmp.replace(out)
    lib = ctypes.CDLL(str(out))
    u32, u64, i32, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32, ctypes.c_void_p
    lib.emu_round_key.argtypes = [u32, u32, ptr, u32, ptr, ptr]
    lib.emu_round_key_v2.argtypes = [u32, u32, ptr, u32, ptr, ptr]
    lib.emu_gen_nibbles.argtypes = [u32, u32, ptr, ptr, u64, u64]
    lib.emu_gen_bytes.argtypes = [u32, u32, ptr, ptr, u64, u64]
    lib.emu_leaf_hash_1k.argtypes = [u32, u32, ptr, u64, ptr]
    lib.emu_merkle_levels.argtypes = [u32, u32, ptr, u64, i32, i32, u64, u64, ptr]
    lib.emu_copy_hash.argtypes = [u32, u32, ptr, ptr]
    _libs[defines] = lib
    return lib


def _ptr(array: np.ndarray, byte_offset: int = 0) -> int:
    assert array.flags.c_contiguous
    return array.ctypes.data + byte_offset


class EmuKernels:
    """The launchers of kernels/cuda_backend.CudaKernels, over NumPy buffers, run on the CPU."""

    def __init__(self, defines: tuple[str, ...] = ()) -> None:
        self.lib = library(defines)

    def round_key(self, seed: np.ndarray, round_index: int, prev_root: np.ndarray, key_out: np.ndarray,
                  spec: str = SPEC_V1) -> None:
        launch = self.lib.emu_round_key_v2 if spec == SPEC_V2 else self.lib.emu_round_key
        launch(1, 1, _ptr(seed), round_index, _ptr(prev_root), _ptr(key_out))

    def gen(self, out: np.ndarray, key: np.ndarray, first_block: int = 0, out_offset: int = 0,
            values: int | None = None, spec: str = SPEC_V1) -> None:
        """`values` values of `spec`'s stream (nibbles in v1, bytes in v2) into `out` from byte `out_offset`,
        starting at Philox block first_block."""
        values = out.size if values is None else values
        blocks = values // cuda_plan.values_per_block(spec)
        launch = self.lib.emu_gen_bytes if spec == SPEC_V2 else self.lib.emu_gen_nibbles
        if blocks:
            launch(cuda_plan.gen_grid(blocks), GEN_THREADS, _ptr(out, out_offset), _ptr(key), first_block, blocks)

    def leaf_hashes(self, data: np.ndarray, n_chunks: int, out: np.ndarray, data_offset: int = 0,
                    out_offset: int = 0) -> None:
        if n_chunks:
            self.lib.emu_leaf_hash_1k(cuda_plan.leaf_grid(n_chunks), LEAF_CHUNKS_PER_BLOCK, _ptr(data, data_offset),
                                      n_chunks, _ptr(out, out_offset))

    def levels(self, levels: np.ndarray, leaves: int, step: Levels, root_out: np.ndarray | None) -> None:
        out = _ptr(root_out) if (step.root and root_out is not None) else None
        self.lib.emu_merkle_levels(step.blocks, LEVEL_NODES_PER_BLOCK // 2, _ptr(levels), leaves, step.start,
                                   step.count, step.first, step.end, out)

    def copy_hash(self, src: np.ndarray, dst: np.ndarray, src_offset: int = 0, dst_offset: int = 0) -> None:
        self.lib.emu_copy_hash(1, 32, _ptr(src, src_offset), _ptr(dst, dst_offset))


def schedule(steps: list[Step], rng: random.Random) -> list[int]:
    """A random order of `steps` (indices) that CUDA's rules allow.

    A step follows the step before it on its stream; a Wait follows the last Record of its event that
    was enqueued before it (a Wait with no such Record waits for nothing, as cudaStreamWaitEvent).
    """
    deps: list[set[int]] = []
    last_on_stream: dict[int, int] = {}
    last_record: dict[int, int] = {}
    for i, step in enumerate(steps):
        need = set()
        if step.stream in last_on_stream:
            need.add(last_on_stream[step.stream])
        if isinstance(step, Wait) and step.event in last_record:
            need.add(last_record[step.event])
        if isinstance(step, Record):
            last_record[step.event] = i
        last_on_stream[step.stream] = i
        deps.append(need)
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(steps):
        ready = [i for i in range(len(steps)) if i not in done and deps[i] <= done]
        pick = rng.choice(ready)
        done.add(pick)
        order.append(pick)
    return order


class EmuBackend:
    """Challenges run from the CUDA backend's launch plans with the emulated kernels and an exact NumPy GEMM."""

    def __init__(self, pieces: int = 1, per_launch: int = cuda_plan.DEFAULT_LEVELS_PER_LAUNCH,
                 order_seed: int | None = None, defines: tuple[str, ...] = ()) -> None:
        self.kernels = EmuKernels(defines)
        self.pieces = pieces
        self.per_launch = per_launch
        self.rng = random.Random(order_seed)
        self.last_levels: np.ndarray | None = None

    def run(self, params: ChallengeParams) -> list[bytes]:
        kern = self.kernels
        geo = Geometry.of(params)
        m_pad = geo.m_pad
        plan = cuda_plan.round_plan(geo, self.pieces, M_ALIGN, self.per_launch)
        leaves = geo.leaves
        sizes, _ = merkle.level_layout(leaves)
        a = np.zeros((m_pad, params.k), dtype=np.int8)
        b = reference.b_matrix(params).astype(np.int64)
        c = np.zeros((m_pad, params.n), dtype=np.int32)
        levels = np.zeros(sum(sizes) * 32, dtype=np.uint8)
        seed = np.frombuffer(params.seed, dtype=np.uint8).copy()
        roots = np.zeros((params.rounds + 1, 32), dtype=np.uint8)
        key_a = np.zeros(2, dtype=np.uint64)
        per_block = cuda_plan.values_per_block(params.spec)
        steps = [(r, step) for r in range(params.rounds) for step in plan]
        for i in schedule([step for _, step in steps], self.rng):
            r, step = steps[i]
            match step:
                case RoundKey():
                    kern.round_key(seed, r, roots[r], key_a, params.spec)
                case Gen(r0=r0, r1=r1):
                    kern.gen(a, key_a, r0 * params.k // per_block, r0 * params.k, (r1 - r0) * params.k, params.spec)
                case Gemm(r0=r0, r1=r1):
                    c[r0:r1] = (a[r0:r1].astype(np.int64) @ b.T).astype(np.int32)
                case Leaves(a=lo, b=hi):
                    kern.leaf_hashes(c, hi - lo, levels, lo * 1024, lo * 32)
                case Levels():
                    kern.levels(levels, leaves, step, roots[r + 1])
                case CopyRoot():
                    kern.copy_hash(levels, roots, 0, (r + 1) * 32)
                case Record() | Wait():
                    pass  # ordering only: schedule() honoured them
        self.last_levels = levels
        return [bytes(row) for row in roots[1:]]

