"""A checkpoint's RFC 6962 root hashed on the GPU where its tensors live (CuPy arrays or CUDA PyTorch tensors).

The layout of the tree (which leaf holds each tensor's header, how many 1 KiB chunks follow it) is the
verifier's (gpuproof.verifier.checkpoints, which calls this); this module only hashes. Like every CUDA module
of gpuproof it imports CuPy at the top and is itself imported only where a GPU is wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cupy
import numpy as np
from gpuproof.kernels import merkle
from gpuproof.kernels.cuda_backend import CudaKernels


def _device_bytes(x: Any) -> Any:
    """The tensor's bytes as a contiguous CuPy uint8 vector, on the device, without a copy where possible."""
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach().contiguous()
        if str(x.dtype) == "torch.bfloat16":  # DLPack has no bfloat16: the same bytes as int16
            import torch

            x = x.view(torch.int16)
        x = cupy.from_dlpack(x)
    return cupy.ascontiguousarray(cupy.asarray(x)).view(cupy.uint8).ravel()


def state_root(tensors: Sequence[Any], header_leaves: Sequence[bytes], layout: Sequence[tuple[int, int]],
               total_leaves: int, chunk: int, device: int = 0) -> bytes:
    """The root of the tree whose leaf `layout[i][0]` is `header_leaves[i]` (a leaf hash computed on the host)
    and whose next `layout[i][1]` leaves hash tensor i's bytes in `chunk`-byte pieces, the last zero-padded.

    Each tensor's full chunks are hashed by leaf_hash_1k where the tensor lies (no copy), straight into the
    tree's level 0; only a last partial chunk is copied, zero-padded; the levels are built by merkle_levels.
    Precondition: the layout covers leaves 0..total_leaves-1 exactly once (the verifier's manifest).
    """
    with cupy.cuda.Device(device):
        kern = CudaKernels(device)
        sizes, _ = merkle.level_layout(total_leaves)
        levels = cupy.empty(sum(sizes) * 32, dtype=cupy.uint8)
        tail = cupy.zeros(chunk, dtype=cupy.uint8)
        for x, header, (header_leaf, chunks) in zip(tensors, header_leaves, layout, strict=True):
            raw = _device_bytes(x)
            if raw.data.ptr % 16:  # the kernel loads 16 bytes at a time: a view at an odd offset is copied
                raw = raw.copy()
            levels[header_leaf * 32:(header_leaf + 1) * 32] = cupy.asarray(np.frombuffer(header, np.uint8))
            whole = raw.size // chunk
            first = (header_leaf + 1) * 32
            if whole:  # full chunks hashed where the tensor lies: no copy
                kern.leaf_hashes(raw[: whole * chunk], whole, levels[first:first + whole * 32])
            if whole < chunks:  # the zero-padded last chunk
                tail.fill(0)
                tail[: raw.size - whole * chunk] = raw[whole * chunk:]
                kern.leaf_hashes(tail, 1, levels[first + whole * 32:first + (whole + 1) * 32])
        top = kern.build_levels(levels, total_leaves)
        return bytes(levels[top * 32:(top + 1) * 32].get().tobytes())
