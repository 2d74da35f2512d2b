"""NVML discovery against stand-ins for pynvml: what it reports with GPUs, without a driver,
and when a query fails (whatever the machine running the tests has)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from gre.replicas.gpus import GpuInfo, discover_gpus, read_gpus


class StubNvml:
    """Answers like pynvml for two GPUs (older pynvml returned bytes, newer str)."""

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040  # CUDA 12.4, as driver 550 reports

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        names: list[str | bytes] = ["NVIDIA H100 80GB HBM3", b"NVIDIA A10G"]
        return names[handle]

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=(80 << 30) >> handle, free=(79 << 30) >> handle, used=0)


def test_read_gpus_parses_what_nvml_reports() -> None:
    gpus = read_gpus(StubNvml())
    uuid = "GPU-0000000{}-aaaa-bbbb-cccc-dddddddddddd"
    assert gpus == [
        GpuInfo(
            0, "NVIDIA H100 80GB HBM3", uuid.format(0), 80 << 30, 79 << 30, "550.54.15", "12.4"
        ),
        GpuInfo(1, "NVIDIA A10G", uuid.format(1), 40 << 30, 79 << 29, "550.54.15", "12.4"),
    ]


class NVMLError(Exception):
    """pynvml's error class, in the stand-in module."""


class FakePynvml(StubNvml):
    """A stand-in ``pynvml`` module: :class:`StubNvml`'s answers, or ``NVMLError`` from
    ``nvmlInit`` (no driver) or from a query; records init and shutdown calls."""

    NVMLError = NVMLError

    def __init__(self, *, init_fails: bool = False, query_fails: bool = False) -> None:
        self.init_fails = init_fails
        self.query_fails = query_fails
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        if self.query_fails:
            raise NVMLError("GPU is lost")
        return super().nvmlDeviceGetCount()


def use(monkeypatch: pytest.MonkeyPatch, fake: FakePynvml) -> FakePynvml:
    """Make ``import pynvml`` (inside discover_gpus) return ``fake``."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_discover_reports_the_gpus_and_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, FakePynvml())
    gpus, problem = discover_gpus()
    assert problem is None
    assert gpus == read_gpus(StubNvml())
    assert fake.calls == ["init", "shutdown"]


def test_discover_without_a_driver_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = use(monkeypatch, FakePynvml(init_fails=True))
    assert discover_gpus() == ([], "NVML unavailable (Driver Not Loaded): no NVIDIA driver")
    assert fake.calls == ["init"]  # nothing to shut down


def test_discover_when_a_query_fails_says_why_and_shuts_nvml_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = use(monkeypatch, FakePynvml(query_fails=True))
    assert discover_gpus() == ([], "NVML query failed: GPU is lost")
    assert fake.calls == ["init", "shutdown"]
