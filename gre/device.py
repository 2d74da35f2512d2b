"""A replica's device: the CPU or one CUDA GPU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """Where a replica runs: ``Device.cpu()`` or ``Device.gpu(i)`` for CUDA device ``i``."""

    kind: str  # "cpu" or "gpu"
    index: int = 0

    @classmethod
    def cpu(cls) -> Device:
        return cls("cpu")

    @classmethod
    def gpu(cls, index: int) -> Device:
        return cls("gpu", index)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        return f"gpu:{self.index}" if self.is_gpu else "cpu"
