"""PNG plots (matplotlib, Agg): latency percentiles vs throughput, and batch size vs load.

Each function takes one or more labelled runs, so the same plot serves one sweep and a
comparison of servers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt

from benchmarks.results import StepResult

#: Line style per percentile; one colour per run.
PERCENTILE_STYLES = {"p50_ms": "-", "p90_ms": ":", "p99_ms": "--"}


def _finite(values: Sequence[float | None]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)


def latency_vs_throughput(
    runs: Mapping[str, Sequence[StepResult]], path: Path, title: str = ""
) -> Path:
    """p50/p90/p99 latency (ms, log scale) against throughput (req/s), one colour per run;
    client-limited steps are circled in red."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for index, (label, steps) in enumerate(runs.items()):
        color = f"C{index}"
        ordered = sorted(steps, key=lambda s: s.load)
        x = [s.throughput for s in ordered]
        for key, style in PERCENTILE_STYLES.items():
            y = [getattr(s, key) for s in ordered]
            if _finite(y):
                ax.plot(x, y, style, marker="o", ms=3, color=color, label=f"{label} {key[:3]}")
        for step in ordered:  # which load each point is: past saturation the line turns back
            if math.isfinite(step.p99_ms):
                label_text = f"c={step.load:g}" if step.mode == "closed" else f"{step.load:g}/s"
                ax.annotate(
                    label_text,
                    (step.throughput, step.p99_ms),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(3, 3),
                    color=color,
                )
        limited = [s for s in ordered if s.client_limited]
        if limited:
            ax.scatter(
                [s.throughput for s in limited], [s.p99_ms for s in limited],
                s=90, facecolors="none", edgecolors="red", label="client-limited",
            )  # fmt: skip
    ax.set_xlabel("throughput (successful req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Latency percentiles vs throughput")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def batch_size_vs_load(
    runs: Mapping[str, Sequence[StepResult]], path: Path, title: str = ""
) -> Path | None:
    """Mean batch size against load (concurrency or offered req/s), for the runs whose server
    reports batch sizes; ``None`` (no file) when none does."""
    reported = {
        label: sorted((s for s in steps if s.mean_batch_size is not None), key=lambda s: s.load)
        for label, steps in runs.items()
    }
    reported = {label: steps for label, steps in reported.items() if steps}
    if not reported:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    modes: set[str] = set()
    for index, label in enumerate(runs):
        if label in reported:
            chosen = reported[label]
            modes.update(s.mode for s in chosen)
            y = [s.mean_batch_size or 0.0 for s in chosen]
            ax.plot([s.load for s in chosen], y, marker="o", color=f"C{index}", label=label)
    closed = modes == {"closed"}
    ax.set_xlabel(
        "concurrency" if closed else "offered load (req/s)" if modes == {"open"} else "load"
    )
    if closed:
        ax.set_xscale("log", base=2)
    ax.set_ylabel("mean batch size (images)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Batch size vs load")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
