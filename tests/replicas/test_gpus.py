"""NVML discovery: only the parsing is tested against a stand-in for pynvml."""

from __future__ import annotations

from types import SimpleNamespace

from gre.replicas.gpus import GpuInfo, discover_gpus, read_gpus


class StubNvml:
    """Answers like pynvml for two GPUs (older pynvml returned bytes, newer str)."""

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return ["NVIDIA H100 80GB HBM3", b"NVIDIA A10G"][handle]

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=(80 << 30) >> handle, free=(79 << 30) >> handle, used=0)


def test_read_gpus_parses_what_nvml_reports() -> None:
    gpus = read_gpus(StubNvml())
    uuid = "GPU-0000000{}-aaaa-bbbb-cccc-dddddddddddd"
    assert gpus == [
        GpuInfo(0, "NVIDIA H100 80GB HBM3", uuid.format(0), 80 << 30, 79 << 30, "550.54.15"),
        GpuInfo(1, "NVIDIA A10G", uuid.format(1), 40 << 30, 79 << 29, "550.54.15"),
    ]


def test_discover_without_a_driver_says_why() -> None:
    # This machine has no NVIDIA driver; a GPU machine reports its GPUs instead.
    gpus, problem = discover_gpus()
    assert (gpus == [] and problem is not None and "NVML" in problem) or (gpus and problem is None)
