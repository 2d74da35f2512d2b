"""Plan the replicas: which device each one runs on, with how many compute threads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from gre.config import ReplicasConfig
from gre.messages import Device
from gre.model.engines import engine_has_gpu, resolve_engine_name
from gre.replicas.gpus import GpuInfo, discover_gpus

log = logging.getLogger("gre.replicas.plan")


class PlanError(ValueError):
    """The requested devices cannot be served (e.g. GPUs asked for but absent)."""


@dataclass(frozen=True)
class ReplicaPlan:
    """Replica ``index`` on ``device`` with ``threads`` compute threads (CPU replicas; 0 on a
    GPU) and ``decode_threads`` threads that decode and preprocess its images."""

    index: int
    device: Device
    threads: int
    decode_threads: int = 1


def plan_devices(
    config: ReplicasConfig, gpus: list[GpuInfo], nvml_problem: str | None
) -> list[Device]:
    """The devices ``replicas.devices`` selects.

    ``"all"`` takes every GPU found, or the CPU when there is none (logged once); a list
    takes exactly those GPU indices and one CPU device per ``"cpu"`` entry.

    Raises:
        PlanError: a GPU index that is not present.
    """
    if config.devices == "cpu":
        return [Device.cpu()]
    if config.devices == "all":
        if gpus:
            return [Device.gpu(g.index) for g in gpus]
        log.warning("no GPU found (%s): serving with CPU replicas", nvml_problem or "0 GPUs")
        return [Device.cpu()]
    present = {g.index for g in gpus}
    missing = [i for i in config.devices if i != "cpu" and i not in present]
    if missing:
        why = nvml_problem or f"NVML found GPUs {sorted(present)}"
        raise PlanError(f"replicas.devices asks for GPU {missing}, not present ({why})")
    return [Device.cpu() if d == "cpu" else Device.gpu(d) for d in config.devices]


def plan_replicas(
    config: ReplicasConfig,
    gpus: list[GpuInfo],
    nvml_problem: str | None,
    engine: str,
    engine_has_gpu: bool,
    devices: list[Device] | None = None,
) -> list[ReplicaPlan]:
    """Place ``instances_per_device`` replicas on each device of :func:`plan_devices`
    (``devices``: that list, already made by the caller).

    CPU replicas get ``cpu_threads`` compute threads each, or the cores shared among them;
    every replica gets ``decode_threads`` decode threads, or the cores shared among all
    replicas (at least 1): the decode threads of a CPU replica take turns with its forward,
    and a GPU replica's only CPU work is decoding.

    Raises:
        PlanError: GPUs requested but absent, or GPUs with an engine that cannot use them
            (``engine_has_gpu`` false: the opencv wheel has no CUDA, a CPU-only pycaffe).
    """
    if devices is None:
        devices = plan_devices(config, gpus, nvml_problem)
    if any(d.is_gpu for d in devices) and not engine_has_gpu:
        raise PlanError(
            f"engine {engine!r} has no GPU support in this installation, but replicas.devices "
            f"selects GPUs {[d.index for d in devices if d.is_gpu]}"
        )
    cpu_replicas = sum(config.instances_per_device for d in devices if not d.is_gpu)
    cores = os.cpu_count() or 1
    threads = config.cpu_threads or max(1, cores // max(1, cpu_replicas))
    replicas = config.instances_per_device * len(devices)
    decode = config.decode_threads or max(1, cores // max(1, replicas))
    plans: list[ReplicaPlan] = []
    for device in devices:
        for _ in range(config.instances_per_device):
            compute = 0 if device.is_gpu else threads
            plans.append(ReplicaPlan(len(plans), device, compute, decode))
    return plans


#: Most HTTP workers ``server.workers = 0`` starts (each is a Python process of ~60 MB).
MAX_AUTO_WORKERS = 16


def http_workers(requested: int, plans: list[ReplicaPlan], cores: int | None = None) -> int:
    """``server.workers``, with 0 resolved: half the cores the replicas leave, at least 1
    and at most :data:`MAX_AUTO_WORKERS`.

    A CPU replica claims its compute threads (by default the cores are shared among the CPU
    replicas, so nothing is left: 1 worker); a GPU replica claims one core for its own
    process. Of the rest, half parse HTTP and half are left to the replicas' decode threads,
    which are sized to every core and share them (on a 16-core machine with one GPU replica:
    7 workers). ``cores``: default ``os.cpu_count()``.
    """
    if requested:
        return requested
    cores = cores or os.cpu_count() or 1
    claimed = sum(plan.threads if not plan.device.is_gpu else 1 for plan in plans)
    return max(1, min(MAX_AUTO_WORKERS, (cores - claimed) // 2))


@dataclass(frozen=True)
class Placement:
    """Where the replicas run: the GPUs NVML found, why NVML is unusable (``None`` if it
    works), the engine (``"auto"`` resolved for the devices) and the replicas' plans."""

    gpus: list[GpuInfo]
    nvml_problem: str | None
    engine: str
    plans: list[ReplicaPlan]


def discover_and_plan(config: ReplicasConfig, engine: str) -> Placement:
    """Find the GPUs with NVML, resolve ``engine`` (``"auto"``: torch when the devices
    include a GPU, else opencv) and plan the replicas for it.

    Raises:
        PlanError: as :func:`plan_replicas`; for the torch engine on GPUs with a CPU-only
            torch, the message says how to install one with CUDA.
    """
    gpus, nvml_problem = discover_gpus()
    devices = plan_devices(config, gpus, nvml_problem)  # once: it logs a fallback to the CPU
    resolved = resolve_engine_name(engine, any(device.is_gpu for device in devices))
    has_gpu = engine_has_gpu(resolved)
    try:
        plans = plan_replicas(config, gpus, nvml_problem, resolved, has_gpu, devices)
    except PlanError as exc:
        if resolved != "torch":
            raise
        raise PlanError(
            f"{exc}: the installed torch is CPU-only (or absent); `make setup` installs the "
            'build for this driver (scripts/install-torch.sh), or set replicas.devices = "cpu"'
        ) from exc
    return Placement(gpus, nvml_problem, resolved, plans)
