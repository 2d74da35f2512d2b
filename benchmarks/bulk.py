"""Bulk classification on one machine: images/s of ``gre classify`` (the replica pool) against
the in-process limit (one Classifier called directly, in this process).

    python -m benchmarks.bulk [--model open_nsfw|bvlc_reference_caffenet|...] [--images 200]
                              [--batch-size 32] [--instances 1 2] [--rounds 2]
                              [--set KEY=VALUE ...]

``--images`` distinct real-photo JPEGs (benchmarks.data.distinct_jpegs: the shared photos
and those scikit-learn and scikit-image ship, then crops and flips of them) are written to a
temporary folder. Each round then measures, in turn:

* in-process: ``gre.offline.build_classifier`` (the configured engine on the CPU, every core
  its compute threads, ``decode_threads`` decoding), ``classify`` over batches of
  ``--batch-size`` files read from the folder; one warm-up batch first, not timed. Images/s
  is the images over the time of all batches: the most a single process gets from the engine.
* pool, once per ``--instances`` count: ``gre classify FOLDER --output rows.jsonl
  --batch-size B --set instances_per_device=N`` in a subprocess (each replica gets the cores
  divided among them); the images/s is the one its closing line reports (replica start-up
  excluded, reading files, the IPC, batching and writing the rows included).

Prints each round's figures, then per pool the median images/s over the rounds and its ratio
to the in-process median. open_nsfw runs with its real weights, zoo models with the seeded
random weights of benchmarks/zoo.py (the weights do not change the work). About 1-2 minutes
on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from benchmarks.data import ROOT, SHARED, distinct_jpegs
from benchmarks.zoo import ZOO_MODELS, zoo_weights
from gre.config import Config, load_config
from gre.model.loader import load_model
from gre.offline import build_classifier

T = TypeVar("T")
#: ``gre classify``'s closing line.
SUMMARY = re.compile(
    r"classified (?P<images>\d+) images in (?P<seconds>[0-9.]+) s: "
    r"(?P<rate>[0-9.]+) images/s \((?P<errors>\d+) errors\)"
)


def parse_rate(stderr: str) -> tuple[int, float, int]:
    """``(images, images/s, errors)`` from ``gre classify``'s closing line in ``stderr``.

    Raises:
        ValueError: no closing line (the run failed; the message holds stderr's tail).
    """
    found = SUMMARY.search(stderr)
    if found is None:
        raise ValueError(f"gre classify printed no closing line:\n{stderr[-2000:]}")
    return int(found["images"]), float(found["rate"]), int(found["errors"])


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of ``size`` (the last one shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def model_settings(name: str) -> dict[str, str]:
    """The ``--set`` overrides that serve ``name``: none for open_nsfw (the default model), a
    zoo model's deploy, random weights, ImageNet labels and preprocessing otherwise."""
    if name == "open_nsfw":
        return {}
    if name not in ZOO_MODELS:
        raise SystemExit(f"unknown model {name!r}: open_nsfw or one of {', '.join(ZOO_MODELS)}")
    deploy = SHARED / "models" / name / "deploy.prototxt"
    settings = {
        "deploy": str(deploy),
        "weights": str(zoo_weights(deploy, name)),
        "synset_words": str(SHARED / "data" / "ilsvrc12" / "synset_words.txt"),
    }
    settings.update({key: repr(value) for key, value in ZOO_MODELS[name].items()})
    return settings


def in_process_rate(config: Config, paths: Sequence[Path], batch_size: int) -> float:
    """Images/s of one in-process Classifier over ``paths`` in batches (module docstring)."""
    classifier = build_classifier(config)
    top_k = config.server.default_top_k
    try:
        warm = [p.read_bytes() for p in paths[:batch_size]]
        classifier.classify(warm, [top_k] * len(warm))
        start = time.perf_counter()
        for batch in chunks(paths, batch_size):
            classifier.classify([p.read_bytes() for p in batch], [top_k] * len(batch))
        return len(paths) / (time.perf_counter() - start)
    finally:
        classifier.close()


def pool_rate(
    folder: Path, settings: dict[str, str], batch_size: int, instances: int, images: int
) -> tuple[float, float]:
    """``(images/s, wall s)`` of ``gre classify`` over ``folder`` with ``instances`` replicas
    (module docstring); the wall time includes the interpreter and the replicas' start-up.

    Raises:
        RuntimeError: it did not classify every image, or failed.
    """
    sets = {**settings, "instances_per_device": str(instances)}
    command = [
        sys.executable, "-m", "gre", "classify", str(folder), "--batch-size", str(batch_size),
        "--output", str(folder.parent / "rows.jsonl"),
        *(arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")),
    ]  # fmt: skip
    begin = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - begin
    count, rate, errors = parse_rate(result.stderr)
    if result.returncode != 0 or count != images or errors:
        raise RuntimeError(f"gre classify: exit {result.returncode}, {count} images, {errors} "
                           f"errors:\n{result.stderr[-2000:]}")  # fmt: skip
    return rate, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="open_nsfw")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--instances", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="more config overrides, for both")  # fmt: skip
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    settings = model_settings(args.model)
    settings.update(dict(s.split("=", 1) for s in args.settings))
    config = load_config(None, {}, settings)
    print(
        f"# bulk classification, {args.model} ({load_model(config).engine} engine), {args.images} "
        f"images, batch {args.batch_size}, cores: {os.cpu_count()}"
    )
    in_process: list[float] = []
    pools: dict[int, list[float]] = {n: [] for n in args.instances}
    with tempfile.TemporaryDirectory(prefix="gre-bulk-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = []
        for i, data in enumerate(distinct_jpegs(args.images)):
            paths.append(folder / f"{i:05d}.jpg")
            paths[-1].write_bytes(data)
        for round_ in range(1, args.rounds + 1):
            in_process.append(in_process_rate(config, paths, args.batch_size))
            print(f"round {round_}: in-process {in_process[-1]:7.1f} images/s", flush=True)
            for n in args.instances:
                rate, wall = pool_rate(folder, settings, args.batch_size, n, args.images)
                pools[n].append(rate)
                print(f"round {round_}: gre classify, {n} replica(s) {rate:7.1f} images/s "
                      f"({wall:.1f} s wall with start-up)", flush=True)  # fmt: skip
    limit = statistics.median(in_process)
    print(f"{'':<28} {'images/s':>9} {'vs in-process':>13}")
    print(f"{'in-process Classifier':<28} {limit:9.1f} {1.0:12.2f}x")
    for n, rates in pools.items():
        rate = statistics.median(rates)
        print(f"{f'gre classify, {n} replica(s)':<28} {rate:9.1f} {rate / limit:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
