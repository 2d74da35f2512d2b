"""Engine throughput on the CPU, forward only: pycaffe (``caffe``), OpenCV DNN (``opencv``) and
gre's torch engine in each precision (``torch:fp32``, ``torch:bf16``, ``torch:fp16``); and,
with ``--accuracy``, how far the torch engine's fp16/bf16 outputs are from its fp32 ones.

    python -m benchmarks.engines [--models open_nsfw squeezenet_v1.1] [--batches 1 8 32]
                                 [--engines caffe opencv torch:fp32 torch:bf16 torch:fp16]
                                 [--seconds 5] [--threads N]
    python -m benchmarks.engines --accuracy [--models ...] [--images 64]

Throughput: for each model and batch size the engines (gre.model.engines.load_engine, as a
replica loads them) are warmed up with two forwards each, then timed with forwards
alternating between them for ``--seconds`` seconds (at least 3 each), so that all see the same
machine; images/s is the batch size over the median forward time (the best forward's figure
in brackets), and the last column is the engine's median over opencv's. The batch is real
photos preprocessed with the model's conventions. open_nsfw runs with its real weights, zoo
models with the seeded random weights of benchmarks/zoo.py (built and cached on first use; the
weights do not change the work a forward does). ``caffe`` is left out when pycaffe is not
importable. About 1-2 minutes per model on 2 cores with the defaults; fp16 on a CPU is slow.

Accuracy (:func:`precision_agreement`): ``--images`` real photos and crops/flips of them
(benchmarks.data.distinct_jpegs), each model's preprocessing, torch fp32 against bf16 and fp16:
top-1 agreement, the largest probability difference, and for the images whose top-1 changed
the fp32 margin between their first and second class (flips happen on near-ties).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.data import SHARED, distinct_jpegs
from benchmarks.zoo import ZOO_MODELS, zoo_weights
from gre.config import PreprocessConfig, resolve_path
from gre.messages import Device
from gre.model.engines import Engine, caffe_importable, load_engine
from gre.model.imaging import decode_bgr
from gre.model.preprocess import Preprocessor
from gre.model.prototxt import read_net_spec

Array = npt.NDArray[np.float32]
ENGINES = ("caffe", "opencv", "torch:fp32", "torch:bf16", "torch:fp16")
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


def preprocessor(name: str, deploy: Path) -> Preprocessor:
    """The model's preprocessing (its zoo page's conventions; open_nsfw: gre's defaults)."""
    return Preprocessor.build(
        PreprocessConfig(**ZOO_MODELS.get(name, {})), read_net_spec(deploy).input_shape
    )


def photo_batch(name: str, deploy: Path, size: int) -> Array:
    """``size`` preprocessed photos (the three of ../shared/images, repeated)."""
    pre = preprocessor(name, deploy)
    blobs = [pre(decode_bgr((SHARED / "images" / p).read_bytes())) for p in PHOTOS]
    return np.stack([blobs[i % len(blobs)] for i in range(size)])


def corpus_batch(name: str, deploy: Path, count: int) -> Array:
    """``(count, C, H, W)``: the real photos of benchmarks.data.photo_paths, then crops and
    flips of them (:func:`benchmarks.data.distinct_jpegs`), preprocessed for the model."""
    pre = preprocessor(name, deploy)
    return np.stack([pre(decode_bgr(data)) for data in distinct_jpegs(count)])


def load(spec: str, deploy: Path, weights: Path, threads: int) -> Engine:
    """The engine ``spec`` names: ``"caffe"``, ``"opencv"`` or ``"torch:<precision>"``."""
    name, _, precision = spec.partition(":")
    return load_engine(
        name, deploy, weights, Device.cpu(), threads, None, 1000, precision or "fp32"
    )


def forward_all(engine: Engine, batch: Array, chunk: int = 16) -> Array:
    """``engine`` over ``batch`` ``chunk`` images at a time (bounded memory) -> ``(N, K)``."""
    return np.concatenate(
        [engine.forward(batch[i : i + chunk]) for i in range(0, len(batch), chunk)]
    )


@dataclass(frozen=True)
class Agreement:
    """fp16/bf16 against fp32 over ``images`` images: how many keep their top-1 class, the
    largest ``|p - p_fp32|`` over all images and classes, and the largest fp32 margin (top-1
    minus top-2 probability) among the images whose top-1 changed (0 when none did)."""

    images: int
    top1_same: int
    max_dp: float
    flipped_margin: float

    @property
    def top1_agreement(self) -> float:
        """The fraction of images that keep their top-1 class."""
        return self.top1_same / self.images


def agreement(reference: Array, got: Array) -> Agreement:
    """Compare ``(N, K)`` probabilities ``got`` with the fp32 ``reference``."""
    same = reference.argmax(axis=1) == got.argmax(axis=1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0])[~same]
    return Agreement(
        images=len(reference),
        top1_same=int(same.sum()),
        max_dp=float(np.abs(got - reference).max()),
        flipped_margin=float(margins.max()) if len(margins) else 0.0,
    )


def precision_agreement(
    name: str, precisions: tuple[str, ...], count: int, threads: int
) -> dict[str, Agreement]:
    """Run ``count`` corpus images (:func:`corpus_batch`) through the torch engine in fp32 and
    in each of ``precisions``; each one's :class:`Agreement` with fp32."""
    deploy, weights = model_files(name)
    batch = corpus_batch(name, deploy, count)
    reference = forward_all(load("torch:fp32", deploy, weights, threads), batch)
    return {
        p: agreement(reference, forward_all(load(f"torch:{p}", deploy, weights, threads), batch))
        for p in precisions
    }


def time_forwards(
    engines: dict[str, Engine], batch: Array, seconds: float
) -> dict[str, list[float]]:
    """Two warm-up forwards per engine, then forwards alternating between the engines (so that
    all see the same machine) until each has at least 3 and ``seconds`` have passed; returns
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


def throughput(args: argparse.Namespace) -> int:
    """The throughput table (module docstring)."""
    specs = [e for e in args.engines if e != "caffe" or caffe_importable()]
    if len(specs) < len(args.engines):
        print("# pycaffe is not importable (`make test` builds it): caffe left out")
    try:  # the torch engine is an optional extra
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "absent"
    print(
        f"# engines forward throughput, CPU, {args.threads} threads "
        f"(cores: {os.cpu_count()}), OpenCV {cv2.__version__}, torch {torch_version}, "
        f"NumPy {np.__version__}"
    )
    header = f"{'model':<24} {'batch':>5} {'engine':<11} {'img/s [best]':>17} {'vs opencv':>9}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        deploy, weights = model_files(name)
        engines = {spec: load(spec, deploy, weights, args.threads) for spec in specs}
        for size in args.batches:
            times = time_forwards(engines, photo_batch(name, deploy, size), args.seconds)
            rates = {spec: size / statistics.median(times[spec]) for spec in specs}
            for spec in specs:
                cell = f"{rates[spec]:8.1f} [{size / min(times[spec]):6.1f}]"
                ratio = f"{rates[spec] / rates['opencv']:8.2f}x" if "opencv" in rates else ""
                print(f"{name:<24} {size:>5} {spec:<11} {cell:>17} {ratio:>9}", flush=True)
    return 0


def accuracy(args: argparse.Namespace) -> int:
    """The accuracy table (module docstring)."""
    print(f"# torch engine on the CPU, fp16/bf16 vs fp32, {args.images} images per model")
    header = (
        f"{'model':<24} {'precision':<9} {'top-1 same':>12} {'max |dp|':>9} {'flip margin':>11}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        for precision, a in precision_agreement(
            name, ("bf16", "fp16"), args.images, args.threads
        ).items():
            same = f"{a.top1_same}/{a.images}"
            print(
                f"{name:<24} {precision:<9} {same:>12} {a.max_dp:9.2e} {a.flipped_margin:11.2e}",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["open_nsfw", "squeezenet_v1.1"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--accuracy", action="store_true", help="fp16/bf16 vs fp32 instead")
    parser.add_argument("--images", type=int, default=64, help="images per model (--accuracy)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    return accuracy(args) if args.accuracy else throughput(args)


if __name__ == "__main__":
    sys.exit(main())
