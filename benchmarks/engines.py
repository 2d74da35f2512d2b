"""Engine throughput, forward only: pycaffe (``caffe``), OpenCV DNN (``opencv``) and gre's
torch engine in each precision (``torch:fp32``, ``torch:bf16``, ``torch:fp16``), on the CPU or
(``--device gpu``) on CUDA device 0; and, with ``--accuracy``, how far the torch engine's
fp16/bf16 outputs are from its fp32 ones.

    python -m benchmarks.engines [--models open_nsfw squeezenet_v1.1] [--batches 1 8 32]
                                 [--engines caffe opencv torch:fp32 torch:bf16 torch:fp16]
                                 [--seconds 5] [--threads N] [--device cpu|gpu]
                                 [--graphs on|off|both]
    python -m benchmarks.engines --accuracy [--models ...] [--images 64] [--device cpu|gpu]

On a GPU (``--device gpu``; default engines there: the torch ones) each torch engine runs with
its CUDA levers on (cuDNN autotuning, pinned memory) and CUDA graphs as ``--graphs`` says:
``both`` (the default) times each precision with graphs (``torch:fp16+graphs``) and without
(``torch:fp16``). A forward's time is the engine's whole ``forward``: the host-to-device copy
of the batch, the net, and the copy of the output back into NumPy, which synchronises with
the GPU, so the timing needs no other ``torch.cuda.synchronize()``. An engine that cannot run
on the GPU (pip's OpenCV has no CUDA) runs on the CPU; the table's device column says where
each ran.

Throughput: for each model and batch size the engines (gre.model.engines.load_engine, as a
replica loads them) are warmed up with two forwards each, then timed with forwards
alternating between them for ``--seconds`` seconds (at least 3 each), so that all see the same
machine; images/s is the batch size over the median forward time (the best forward's figure
in brackets), and the last column is the engine's median over opencv's (over the first
engine's when opencv is not among them). The batch is real photos preprocessed with the
model's conventions. open_nsfw runs with its real weights, zoo models with the seeded random
weights of benchmarks/zoo.py (built and cached on first use; the weights do not change the
work a forward does; without pycaffe, benchmarks/gpu_check_weights.py makes the same ones).
``caffe`` is left out when pycaffe is not importable. About 1-2 minutes per model on 2 cores
with the defaults; fp16 on a CPU is slow.

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
from benchmarks.zoo import ZOO_MODELS, weights_path, zoo_weights
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
    if weights_path(deploy_path, name).is_file() or caffe_importable():
        return deploy_path, zoo_weights(deploy_path, name)
    from benchmarks.gpu_check_weights import write_random_weights  # torch, no pycaffe

    return deploy_path, write_random_weights(deploy_path, name)


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


def load(
    spec: str, deploy: Path, weights: Path, threads: int, device: Device | None = None
) -> Engine:
    """The engine ``spec`` names: ``"caffe"``, ``"opencv"``, ``"torch:<precision>"`` or, for
    CUDA graphs on (the torch engine's default; it has them only on a GPU),
    ``"torch:<precision>+graphs"``; a plain ``torch:<precision>`` on a GPU runs eagerly (its
    other levers on). ``device``: default the CPU."""
    device = device or Device.cpu()
    name, _, rest = spec.partition(":")
    precision, _, graphs = rest.partition("+")
    if name == "torch" and device.is_gpu:
        from gre.model.engines.torch import TorchEngine

        return TorchEngine(
            deploy,
            weights,
            device,
            threads,
            None,
            precision or "fp32",
            cuda_graphs=graphs == "graphs",
        )
    return load_engine(name, deploy, weights, device, threads, None, 1000, precision or "fp32")


def gpu_specs(specs: list[str], graphs: str) -> list[str]:
    """``specs`` for a GPU run: each torch one as eager (``graphs="off"``), with CUDA graphs
    (``"on"``, ``+graphs``) or both, in that order."""
    suffixes = {"off": [""], "on": ["+graphs"], "both": ["", "+graphs"]}[graphs]
    return [s + x for s in specs for x in (suffixes if s.startswith("torch:") else [""])]


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
    name: str, precisions: tuple[str, ...], count: int, threads: int, device: Device | None = None
) -> dict[str, Agreement]:
    """Run ``count`` corpus images (:func:`corpus_batch`) through the torch engine in fp32 and
    in each of ``precisions`` on ``device`` (default the CPU); each one's :class:`Agreement`
    with fp32."""
    deploy, weights = model_files(name)
    return batch_agreement(
        deploy, weights, corpus_batch(name, deploy, count), precisions, threads, device
    )


def batch_agreement(
    deploy: Path,
    weights: Path,
    batch: Array,
    precisions: tuple[str, ...],
    threads: int,
    device: Device | None = None,
) -> dict[str, Agreement]:
    """:func:`precision_agreement` of a given net and ``(N, C, H, W)`` batch."""
    reference = forward_all(load("torch:fp32", deploy, weights, threads, device), batch)
    return {
        p: agreement(
            reference, forward_all(load(f"torch:{p}", deploy, weights, threads, device), batch)
        )
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


@dataclass(frozen=True)
class Row:
    """One engine's throughput at one batch size: images/s at the median forward time and at
    the best one, the number of timed forwards, and the device it ran on."""

    model: str
    batch: int
    engine: str
    device: str
    images_s: float
    best_images_s: float
    forwards: int


def batch_rows(name: str, engines: dict[str, Engine], batch: Array, seconds: float) -> list[Row]:
    """Time ``engines`` on ``batch`` (:func:`time_forwards`): one :class:`Row` per engine."""
    times = time_forwards(engines, batch, seconds)
    size = len(batch)
    return [
        Row(
            name,
            size,
            spec,
            engine.device,
            size / statistics.median(times[spec]),
            size / min(times[spec]),
            len(times[spec]),
        )
        for spec, engine in engines.items()
    ]


def throughput(args: argparse.Namespace) -> int:
    """The throughput table (module docstring)."""
    gpu = args.device == "gpu"
    device = Device.gpu(0) if gpu else Device.cpu()
    wanted = args.engines or (
        [e for e in ENGINES if e.startswith("torch:")] if gpu else list(ENGINES)
    )
    specs = [e for e in wanted if e != "caffe" or caffe_importable()]
    if len(specs) < len(wanted):
        print("# pycaffe is not importable (`make test` builds it): caffe left out")
    if gpu:
        specs = gpu_specs(specs, args.graphs)
    try:  # the torch engine is an optional extra
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "absent"
    where = f"GPU 0 (CUDA graphs: {args.graphs})" if gpu else "CPU"
    print(
        f"# engines forward throughput, {where}, {args.threads} CPU threads "
        f"(cores: {os.cpu_count()}), OpenCV {cv2.__version__}, torch {torch_version}, "
        f"NumPy {np.__version__}"
    )
    base = "opencv" if "opencv" in specs else specs[0]
    header = (
        f"{'model':<24} {'batch':>5} {'engine':<18} {'device':<6} {'img/s [best]':>17} "
        f"{'vs ' + base:>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        deploy, weights = model_files(name)
        engines = {spec: load(spec, deploy, weights, args.threads, device) for spec in specs}
        for size in args.batches:
            rows = batch_rows(name, engines, photo_batch(name, deploy, size), args.seconds)
            reference = next(row.images_s for row in rows if row.engine == base)
            for row in rows:
                cell = f"{row.images_s:8.1f} [{row.best_images_s:6.1f}]"
                ratio = f"{row.images_s / reference:8.2f}x"
                print(
                    f"{name:<24} {size:>5} {row.engine:<18} {row.device:<6} {cell:>17} {ratio:>9}",
                    flush=True,
                )
    return 0


def accuracy(args: argparse.Namespace) -> int:
    """The accuracy table (module docstring)."""
    device = Device.gpu(0) if args.device == "gpu" else Device.cpu()
    where = "GPU 0" if device.is_gpu else "the CPU"
    print(f"# torch engine on {where}, fp16/bf16 vs fp32, {args.images} images per model")
    header = (
        f"{'model':<24} {'precision':<9} {'top-1 same':>12} {'max |dp|':>9} {'flip margin':>11}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        for precision, a in precision_agreement(
            name, ("bf16", "fp16"), args.images, args.threads, device
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
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        help="default: all on the CPU, the torch ones on a GPU",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--graphs",
        choices=("on", "off", "both"),
        default="both",
        help="torch on a GPU: CUDA graphs on, off, or each precision both ways",
    )
    parser.add_argument("--accuracy", action="store_true", help="fp16/bf16 vs fp32 instead")
    parser.add_argument("--images", type=int, default=64, help="images per model (--accuracy)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    return accuracy(args) if args.accuracy else throughput(args)


if __name__ == "__main__":
    sys.exit(main())
