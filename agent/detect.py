"""Which GPUs this machine has: CuPy first, then NVML (nvidia-ml-py), else none."""

from __future__ import annotations

from gpuproof.agent.config import DeviceSpec


def detect() -> list[DeviceSpec]:
    """One DeviceSpec per physical GPU (count 1, its CUDA index), or [] when none is found.

    Each GPU is registered, challenged and served by its own worker, so one slow or faulty card never
    hides behind a good one.
    """
    found: list[tuple[str, float]] = []
    try:
        import cupy

        if cupy.is_available():
            for i in range(cupy.cuda.runtime.getDeviceCount()):
                props = cupy.cuda.runtime.getDeviceProperties(i)
                name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
                found.append((name, props["totalGlobalMem"] / 2**30))
    except Exception:  # no CuPy, or a broken CUDA install: try NVML
        found = []
    if not found:
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else name
                found.append((name, pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30))
        except Exception:
            return []
    return [DeviceSpec(model=name, count=1, vram_gib=round(vram, 1), cuda_index=index)
            for index, (name, vram) in enumerate(found)]
