from __future__ import annotations

import pytest

from gre.config import ReplicasConfig
from gre.messages import Device
from gre.replicas.gpus import GpuInfo
from gre.replicas.plan import PlanError, plan_replicas

GPUS = [GpuInfo(i, "GPU", f"GPU-{i}", 1 << 34, 1 << 33, "550") for i in range(4)]


def devices(config: ReplicasConfig, gpus: list[GpuInfo], has_gpu: bool = True) -> list[str]:
    return [str(p.device) for p in plan_replicas(config, gpus, None, "caffe", has_gpu)]


def test_all_takes_every_gpu_with_instances_each() -> None:
    config = ReplicasConfig(devices="all", instances_per_device=2)
    assert devices(config, GPUS[:2]) == ["gpu:0", "gpu:0", "gpu:1", "gpu:1"]


def test_all_without_gpus_falls_back_to_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    plans = plan_replicas(ReplicasConfig(devices="all"), [], "no driver", "opencv", False)
    assert [p.device for p in plans] == [Device.cpu()]
    assert "no GPU found (no driver)" in caplog.text


def test_explicit_gpu_list() -> None:
    assert devices(ReplicasConfig(devices=[0, 2]), GPUS) == ["gpu:0", "gpu:2"]


def test_absent_gpu_is_an_error_that_names_it() -> None:
    with pytest.raises(PlanError, match=r"GPU \[5\], not present"):
        devices(ReplicasConfig(devices=[0, 5]), GPUS)


def test_gpus_with_an_engine_without_gpu_support() -> None:
    with pytest.raises(PlanError, match="no GPU support"):
        devices(ReplicasConfig(devices=[0]), GPUS, has_gpu=False)


def test_cpu_entries_are_devices_of_their_own_sharing_the_cores() -> None:
    plans = plan_replicas(ReplicasConfig(devices=["cpu", "cpu"]), [], None, "opencv", False)
    assert [str(p.device) for p in plans] == ["cpu", "cpu"]
    assert len({p.index for p in plans}) == 2
    assert all(p.threads >= 1 for p in plans)
    explicit = plan_replicas(ReplicasConfig(cpu_threads=3), [], None, "opencv", False)
    assert explicit[0].threads == 3


def test_decode_threads_default_to_the_cores_shared_among_all_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 16-core box with 2 GPUs, 2 replicas each: 4 decode threads per replica."""
    monkeypatch.setattr("gre.replicas.plan.os.cpu_count", lambda: 16)
    config = ReplicasConfig(devices="all", instances_per_device=2)
    plans = plan_replicas(config, GPUS[:2], None, "torch", True)
    assert [(p.threads, p.decode_threads) for p in plans] == [(0, 4)] * 4
    cpu = plan_replicas(ReplicasConfig(devices="cpu"), [], None, "opencv", False)
    assert [(p.threads, p.decode_threads) for p in cpu] == [(16, 16)]
    tiny = plan_replicas(ReplicasConfig(devices="all", instances_per_device=64), GPUS, None,
                         "torch", True)  # fmt: skip
    assert {p.decode_threads for p in tiny} == {1}  # never 0
    fixed = plan_replicas(ReplicasConfig(decode_threads=3), GPUS[:1], None, "torch", True)
    assert [p.decode_threads for p in fixed] == [3]


def test_http_workers_auto_takes_half_the_cores_the_replicas_leave() -> None:
    from gre.replicas.plan import MAX_AUTO_WORKERS, ReplicaPlan, http_workers

    gpu = [ReplicaPlan(0, Device.gpu(0), 0, 16)]
    two_gpus = [*gpu, ReplicaPlan(1, Device.gpu(1), 0, 8)]
    cpu = plan_replicas(ReplicasConfig(devices="cpu"), [], "no NVML", "opencv", False)
    assert http_workers(0, gpu, cores=16) == 7  # 15 left: 7 parse, 8 decode
    assert http_workers(0, two_gpus, cores=16) == 7
    assert http_workers(0, cpu, cores=2) == 1  # CPU replicas take every core by default
    assert http_workers(0, gpu, cores=2) == 1
    assert http_workers(0, gpu, cores=256) == MAX_AUTO_WORKERS
    assert http_workers(3, cpu, cores=2) == 3  # a number is kept as it is
    small = [ReplicaPlan(0, Device.cpu(), 2, 2)]
    assert http_workers(0, small, cores=16) == 7  # cpu_threads = 2 leaves 14
