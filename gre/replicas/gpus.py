"""Discover NVIDIA GPUs with NVML (the ``nvidia-ml-py`` package, module ``pynvml``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gre.replicas.gpus")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it (memory in bytes); ``cuda_driver`` is the newest CUDA
    runtime its driver runs (``"13.0"``; ``""``: NVML did not say)."""

    index: int
    name: str
    uuid: str
    memory_total: int
    memory_free: int
    driver_version: str
    cuda_driver: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_gpus(nvml: Any) -> list[GpuInfo]:
    """Query every GPU through an initialised NVML module (``pynvml`` or a stand-in).

    Raises:
        whatever NVML raises (``pynvml.NVMLError``) when a query fails.
    """
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = getattr(nvml, "nvmlSystemGetCudaDriverVersion", None)  # NVML >= 9 (driver 384)
    cuda_driver = f"{cuda() // 1000}.{cuda() % 1000 // 10}" if cuda is not None else ""
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                memory_total=int(memory.total),
                memory_free=int(memory.free),
                driver_version=driver,
                cuda_driver=cuda_driver,
            )
        )
    return gpus


def discover_gpus() -> tuple[list[GpuInfo], str | None]:
    """The GPUs NVML sees, and ``None``; or ``[]`` and why NVML is unusable (no driver...)."""
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
        return [], f"pynvml is not installed: {exc}"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({exc}): no NVIDIA driver"
    try:
        return read_gpus(pynvml), None
    except pynvml.NVMLError as exc:
        return [], f"NVML query failed: {exc}"
    finally:
        pynvml.nvmlShutdown()
