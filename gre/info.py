"""``gre info``: the model, the GPUs NVML found, and where each replica would run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gre.config import Config
from gre.model.engines.choice import runtime_fits_driver, torch_build
from gre.model.loader import load_model
from gre.replicas.gpus import GpuInfo
from gre.replicas.plan import discover_and_plan, http_workers


def compatibility(gpu: GpuInfo, engine: str) -> str:
    """Whether ``engine`` can run on ``gpu`` with this driver and installation, in words:
    for the torch engine, the CUDA runtime of the installed torch build against the newest
    one the driver runs."""
    if engine != "torch":
        return f"the {engine} engine runs on the CPU only in this installation"
    build = torch_build()
    if build is None:
        return "torch is not installed: `make setup` installs it (scripts/install-torch.sh)"
    if build.cuda is None:
        return f"torch {build.version} is CPU-only: scripts/install-torch.sh installs a CUDA build"
    if not gpu.cuda_driver:
        return f"torch {build.version} (CUDA {build.cuda}); the driver's CUDA version is unknown"
    fits = runtime_fits_driver(build.cuda, gpu.cuda_driver)
    verdict = "ok" if fits else "too old a driver: scripts/install-torch.sh picks a torch for it"
    return (
        f"driver {gpu.driver_version} runs CUDA <= {gpu.cuda_driver}; torch {build.version} "
        f"needs CUDA {build.cuda}: {verdict}"
    )


def decoder(decode: str, on_gpu: bool) -> str:
    """Which decoder a replica's JPEGs go through: ``"opencv"`` (``decode = "cpu"``),
    ``"nvjpeg"`` (``"gpu"`` on a GPU) or ``"torchvision-cpu"`` (``"gpu"`` on a CPU replica:
    torchvision's libjpeg-turbo, the same code path)."""
    if decode != "gpu":
        return "opencv"
    return "nvjpeg" if on_gpu else "torchvision-cpu"


def describe(config: Config) -> dict[str, Any]:
    """Facts for ``gre info`` as a JSON-ready dict.

    Raises:
        gre.model.loader.ModelError, gre.replicas.plan.PlanError: the model or the device
            plan is unusable.
    """
    model = load_model(config)
    placement = discover_and_plan(config.replicas, config.model.engine)
    engine, precision = placement.engine, config.model.precision
    decode = config.preprocess.decode
    return {
        "model": {
            "name": model.name,
            "engine": engine,
            "precision": precision,
            "deploy": str(config.model.deploy),
            "weights": str(config.model.weights),
            "input": model.net.input_name,
            "input_shape": list(model.net.input_shape),
            "classes": len(model.labels) if model.labels else None,
        },
        "gpus": [asdict(g) | {"compatibility": compatibility(g, engine)} for g in placement.gpus],
        "nvml": placement.nvml_problem or "ok",
        "replicas": [
            {
                "index": p.index,
                "device": str(p.device),
                "threads": p.threads,
                "engine": engine,
                "precision": precision,
                "decoder": decoder(decode, p.device.is_gpu),
            }
            for p in placement.plans
        ],
        "batching": config.batching.model_dump(),
        "http_workers": http_workers(config.server.workers, placement.plans),
    }


def render(facts: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    model = facts["model"]
    lines = [
        f"model     {model['name']} ({model['engine']} engine)",
        f"deploy    {model['deploy']}",
        f"weights   {model['weights']}",
        f"input     {model['input']} {'x'.join(map(str, model['input_shape']))}",
        f"NVML      {facts['nvml']}",
    ]
    for gpu in facts["gpus"]:
        lines.append(
            f"GPU {gpu['index']}     {gpu['name']} {gpu['uuid']} "
            f"{gpu['memory_free'] / 2**30:.1f}/{gpu['memory_total'] / 2**30:.1f} GiB free, "
            f"driver {gpu['driver_version']}"
        )
        lines.append(f"          {gpu['compatibility']}")
    for replica in facts["replicas"]:
        threads = f", {replica['threads']} threads" if replica["threads"] else ""
        lines.append(
            f"replica {replica['index']} on {replica['device']}{threads}: "
            f"{replica['engine']} engine, {replica['precision']}, "
            f"decoded by {replica['decoder']}"
        )
    lines.append(f"HTTP      {facts['http_workers']} worker process(es) (server.workers)")
    batching = facts["batching"]
    lines.append(
        f"batching  max_batch_size {batching['max_batch_size']}, max_batch_bytes "
        f"{batching['max_batch_bytes']}, max_queue_delay_ms "
        f"{batching['max_queue_delay_ms']}, max_queue_size {batching['max_queue_size']}, "
        f"timeout_ms {batching['timeout_ms']}"
    )
    return "\n".join(lines)
