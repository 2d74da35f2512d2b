"""GRE's own published benchmark, run against gre: CaffeNet, ``hey -c 8``, one JPEG.

GRE's README reports::

    hey -c 8 -n 200000 -m POST -D image.jpg http://127.0.0.1:8000/api/classify
    Requests/sec: 1984.57   (4x Titan X, BVLC CaffeNet)

This serves CaffeNet with gre and runs the same hey invocation, scaled down (``-n``), so that
anyone can set this machine's figure beside GRE's. CaffeNet's files come from
``models/bvlc_reference_caffenet/`` when they are there (``config/bvlc_reference_caffenet.toml``,
real weights); otherwise from ../shared: its deploy prototxt with seeded random weights made by
benchmarks/zoo.py (the same work per forward as the real ones; needs pycaffe once, then cached),
the ILSVRC-2012 synset words and mean image (``mean_mode = "image"``, as the config).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import SHARED_IMAGES
from benchmarks.heyload import hey_path
from benchmarks.servers import ROOT, free_port, running_gre

#: GRE's figure and set-up, from its README.
GRE_FIGURE = "1984.57 req/s on 4 x NVIDIA Titan X (BVLC CaffeNet, hey -c 8 -n 200000)"
SHARED = SHARED_IMAGES.parent
CAFFENET = "bvlc_reference_caffenet"


def caffenet_args() -> tuple[list[str], str]:
    """``gre serve`` arguments that serve CaffeNet, and where its weights come from.

    Raises:
        RuntimeError: neither real weights under models/ nor pycaffe to make random ones.
    """
    real = ROOT / "models" / CAFFENET / f"{CAFFENET}.caffemodel"
    if real.is_file():
        return ["--config", str(ROOT / "config" / f"{CAFFENET}.toml")], f"real weights ({real})"
    from benchmarks.zoo import zoo_weights

    deploy = SHARED / "models" / CAFFENET / "deploy.prototxt"
    weights = zoo_weights(deploy, CAFFENET)
    settings = {
        "name": CAFFENET,
        "deploy": deploy,
        "weights": weights,
        "synset_words": SHARED / "data/ilsvrc12/synset_words.txt",
        "mean": SHARED / "data/ilsvrc12/ilsvrc_2012_mean.npy",
        "mean_mode": "image",
    }
    args = [x for key, value in settings.items() for x in ("--set", f"{key}={value}")]
    return args, f"seeded random weights ({weights})"


@dataclass(frozen=True)
class HeySummary:
    """hey's summary: req/s, latency percentiles (ms) and responses by status."""

    rps: float
    percentiles_ms: dict[int, float]
    statuses: dict[str, int]
    output: str


def parse_hey_summary(output: str) -> HeySummary:
    """hey's default (text) output -> :class:`HeySummary`.

    Raises:
        ValueError: no ``Requests/sec`` line (not hey's summary).
    """
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise ValueError(f"not hey's summary: {output[:300]!r}")
    percentiles = {
        int(p): float(s) * 1e3 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", output)
    }
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", output)}
    return HeySummary(float(found.group(1)), percentiles, statuses, output)


def hey_command(url: str, image: Path, concurrency: int, requests: int) -> list[str]:
    """GRE's invocation: ``hey -c C -n N -m POST -D IMAGE URL``."""
    return ["hey", "-c", str(concurrency), "-n", str(requests), "-m", "POST", "-D", str(image), url]


def run_hey(command: list[str]) -> HeySummary:
    """Run hey (the installed one) and parse its summary."""
    out = subprocess.run([hey_path(), *command[1:]], capture_output=True, text=True, check=True)
    return parse_hey_summary(out.stdout)


def gre_hey(
    requests: int, concurrency: int = 8, image: Path | None = None, engine: str = "opencv",
    warmup: int = 200, echo: bool = True,
) -> HeySummary:  # fmt: skip
    """Serve CaffeNet with gre, warm up, run GRE's hey command; print and return its figures."""
    image = image or SHARED_IMAGES / "cat.jpg"
    args, weights = caffenet_args()
    port = free_port()
    with running_gre(port=port, engine=engine, args=args) as base:
        url = f"{base}/api/classify"
        if warmup:
            run_hey(hey_command(url, image, concurrency, max(warmup, concurrency)))
        command = hey_command(url, image, concurrency, requests)
        summary = run_hey(command)
    if echo:
        p = summary.percentiles_ms
        print(f"gre: CaffeNet, {weights}, engine {engine}")
        print("$ " + " ".join(command))
        print(
            f"this machine: {summary.rps:.2f} req/s, p50 {p.get(50, float('nan')):.1f} ms, "
            f"p99 {p.get(99, float('nan')):.1f} ms, responses {summary.statuses}"
        )
        print(f"GRE's README: {GRE_FIGURE}")
    return summary
