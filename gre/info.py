"""``gre info``: the model, the GPUs NVML found, and where each replica would run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gre.config import Config
from gre.model.loader import load_model
from gre.replicas.plan import discover_and_plan


def describe(config: Config) -> dict[str, Any]:
    """Facts for ``gre info`` as a JSON-ready dict.

    Raises:
        gre.model.loader.ModelError, gre.replicas.plan.PlanError: the model or the device
            plan is unusable.
    """
    model = load_model(config)
    gpus, problem, plans = discover_and_plan(config.replicas, model.engine)
    return {
        "model": {
            "name": model.name,
            "engine": model.engine,
            "deploy": str(config.model.deploy),
            "weights": str(config.model.weights),
            "input": model.net.input_name,
            "input_shape": list(model.net.input_shape),
            "classes": len(model.labels) if model.labels else None,
        },
        "gpus": [asdict(g) for g in gpus],
        "nvml": problem or "ok",
        "replicas": [
            {"index": p.index, "device": str(p.device), "threads": p.threads} for p in plans
        ],
        "batching": config.batching.model_dump(),
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
    for replica in facts["replicas"]:
        threads = f", {replica['threads']} threads" if replica["threads"] else ""
        lines.append(f"replica {replica['index']} on {replica['device']}{threads}")
    batching = facts["batching"]
    lines.append(
        f"batching  max_batch_size {batching['max_batch_size']}, max_queue_delay_ms "
        f"{batching['max_queue_delay_ms']}, max_queue_size {batching['max_queue_size']}, "
        f"timeout_ms {batching['timeout_ms']}"
    )
    return "\n".join(lines)
