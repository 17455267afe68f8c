"""Shared test helpers: the vector files and the GPU/nvcc guards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def cuda_reason() -> str | None:
    """None when a CUDA GPU is usable through CuPy, else why not."""
    from kernels.backend import cuda_status

    usable, reason = cuda_status()
    return None if usable else reason


def pytest_collection_modifyitems(config, items):
    gpu_skip = None
    nvcc_skip = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu_skip is None:
                reason = cuda_reason()
                gpu_skip = pytest.mark.skip(reason=f"no CUDA GPU: {reason}") if reason else False
            if gpu_skip:
                item.add_marker(gpu_skip)
        if "nvcc" in item.keywords:
            if nvcc_skip is None:
                nvcc_skip = (pytest.mark.skip(reason="nvcc is not on PATH") if shutil.which("nvcc") is None
                             else False)
            if nvcc_skip:
                item.add_marker(nvcc_skip)
