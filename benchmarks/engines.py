"""Engine throughput: pycaffe (``caffe``) vs OpenCV DNN (``opencv``), forward only, on the CPU.

    python -m benchmarks.engines [--models open_nsfw squeezenet_v1.1] [--batches 1 8 32]
                                 [--seconds 5] [--threads N]

For each model and batch size, both engines (gre.model.engines.load_engine, as a replica loads them)
are warmed up with two forwards each, then timed with forwards alternating between them for
``--seconds`` seconds (at least 3 each), so that both see the same machine; images/s is the
batch size over the median forward time (the best forward's figure in brackets). The batch is
real photos preprocessed with the model's conventions. open_nsfw runs with its real weights,
zoo models with the seeded random weights of benchmarks/zoo.py (built and cached on first use; the
weights do not change the work a forward does). The last column is opencv / caffe. About 1-2
minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.data import SHARED
from benchmarks.zoo import ZOO_MODELS, zoo_weights
from gre.config import PreprocessConfig, resolve_path
from gre.messages import Device
from gre.model.engines import Engine, caffe_importable, load_engine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import read_net_spec

ENGINES = ("caffe", "opencv")
PHOTOS = ("cat.jpg", "fish-bike.jpg", "cat_gray.jpg")


def model_files(name: str) -> tuple[Path, Path]:
    """``(deploy, weights)`` of open_nsfw (the ``nsfw`` package) or a zoo model."""
    if name == "open_nsfw":
        deploy = resolve_path("package:nsfw/deploy.prototxt", Path.cwd())
        weights = resolve_path("package:nsfw/resnet_50_1by2_nsfw.caffemodel", Path.cwd())
        return Path(deploy), Path(weights)
    if name not in ZOO_MODELS:
        raise SystemExit(f"unknown model {name!r}: open_nsfw or one of {', '.join(ZOO_MODELS)}")
    deploy_path = SHARED / "models" / name / "deploy.prototxt"
    return deploy_path, zoo_weights(deploy_path, name)


def photo_batch(name: str, deploy: Path, size: int) -> npt.NDArray[np.float32]:
    """``size`` preprocessed photos (the three of ../shared/images, repeated)."""
    pre = Preprocessor.build(
        PreprocessConfig(**ZOO_MODELS.get(name, {})), read_net_spec(deploy).input_shape
    )
    blobs = [pre(decode_bgr((SHARED / "images" / p).read_bytes())) for p in PHOTOS]
    return np.stack([blobs[i % len(blobs)] for i in range(size)])


def time_forwards(
    engines: dict[str, Engine], batch: npt.NDArray[np.float32], seconds: float
) -> dict[str, list[float]]:
    """Two warm-up forwards per engine, then forwards alternating between the engines (so that
    both see the same machine) until each has at least 3 and ``seconds`` have passed; returns
    each engine's forward times in seconds."""
    for engine in engines.values():
        for _ in range(2):
            engine.forward(batch)
    times: dict[str, list[float]] = {name: [] for name in engines}
    start = time.perf_counter()
    while min(map(len, times.values())) < 3 or time.perf_counter() - start < seconds:
        for name, engine in engines.items():
            begin = time.perf_counter()
            engine.forward(batch)
            times[name].append(time.perf_counter() - begin)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["open_nsfw", "squeezenet_v1.1"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not caffe_importable():
        print("pycaffe is not importable: run `make test` (it builds it)", file=sys.stderr)
        return 1
    os.environ.setdefault("GLOG_minloglevel", "2")
    print(
        f"# engines forward throughput, CPU, {args.threads} threads "
        f"(cores: {os.cpu_count()}), OpenCV {cv2.__version__}, NumPy {np.__version__}"
    )
    header = (
        f"{'model':<16} {'batch':>5} {'caffe img/s':>20} {'opencv img/s':>20} {'opencv/caffe':>12}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        deploy, weights = model_files(name)
        engines = {
            engine: load_engine(engine, deploy, weights, Device.cpu(), args.threads, None, 1000)
            for engine in ENGINES
        }
        for size in args.batches:
            batch = photo_batch(name, deploy, size)
            times = time_forwards(engines, batch, args.seconds)
            rates = {engine: size / statistics.median(times[engine]) for engine in ENGINES}
            cells = [f"{rates[e]:8.1f} [{size / min(times[e]):6.1f}]" for e in ENGINES]
            ratio = rates["opencv"] / rates["caffe"]
            print(f"{name:<16} {size:>5} {cells[0]:>20} {cells[1]:>20} {ratio:>11.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
