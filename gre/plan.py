"""Plan the replicas: which device each one runs on, with how many compute threads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from gre.config import ReplicasConfig
from gre.device import Device
from gre.gpus import GpuInfo

log = logging.getLogger("gre.plan")


class PlanError(ValueError):
    """The requested devices cannot be served (e.g. GPUs asked for but absent)."""


@dataclass(frozen=True)
class ReplicaPlan:
    """Replica ``index`` on ``device`` with ``threads`` compute threads (CPU replicas)."""

    index: int
    device: Device
    threads: int


def plan_replicas(
    config: ReplicasConfig, gpus: list[GpuInfo], nvml_problem: str | None, engine: str
) -> list[ReplicaPlan]:
    """Place ``instances_per_device`` replicas on each selected device.

    ``devices = "all"`` takes every GPU found, or the CPU when there is none (logged);
    a list of indices takes exactly those GPUs.

    Raises:
        PlanError: GPU indices requested but not present, or a GPU list with an engine that
            cannot use a GPU (``null``).
    """
    if config.devices == "cpu":
        devices = [Device.cpu()]
    elif config.devices == "all":
        if gpus:
            devices = [Device.gpu(g.index) for g in gpus]
        else:
            log.warning("no GPU found (%s): serving with CPU replicas", nvml_problem or "0 GPUs")
            devices = [Device.cpu()]
    else:
        present = {g.index for g in gpus}
        missing = [i for i in config.devices if i not in present]
        if missing:
            why = nvml_problem or f"found GPUs {sorted(present)}"
            raise PlanError(f"replicas.devices asks for GPU {missing}, not present ({why})")
        if engine == "null":
            raise PlanError("engine 'null' runs no net and cannot be placed on GPUs")
        devices = [Device.gpu(i) for i in config.devices]
    cpu_replicas = sum(config.instances_per_device for d in devices if not d.is_gpu)
    cores = os.cpu_count() or 1
    threads = config.cpu_threads or max(1, cores // max(1, cpu_replicas))
    plans: list[ReplicaPlan] = []
    for device in devices:
        for _ in range(config.instances_per_device):
            plans.append(ReplicaPlan(len(plans), device, 0 if device.is_gpu else threads))
    return plans
