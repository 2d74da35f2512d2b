"""benchmarks/gpu_check.py's ``decode`` section: ``preprocess.decode = "gpu"`` against the
host pipeline (OpenCV's libjpeg-turbo, cv2.resize, crop), on the same JPEGs.

It prints and records: the crops' pixel differences (largest and mean ``|d|`` in levels, the
share of values that differ), the torch engine's probabilities from each set of crops for
open_nsfw and CaffeNet (largest ``|dp|``, top-1 agreement), and decode + squash + crop rates
in images/s at batch 32 and 128: the device decoder against the host's decode threads on
every core. On the CPU (``--device cpu``) the device decoder is torchvision's libjpeg-turbo:
the crops must be identical, so any difference fails the section.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.engines import load, preprocessor
from benchmarks.gpu_check_context import CAFFENET, Context, jpegs
from benchmarks.gpu_check_runner import Budget, Failed, Figures, Partial
from gre.messages import Device
from gre.model.classifier import Classifier
from gre.model.engines import DecodesOnDevice, TakesPixels

NETS = ("open_nsfw", CAFFENET)


def _rate(work: Callable[[], object], images: int, seconds: float) -> float:
    """Images/s of ``work`` (one batch of ``images``), repeated for about ``seconds``."""
    work()  # first use: nvJPEG handles, buffers
    runs, start = 0, time.perf_counter()
    while runs < 2 or time.perf_counter() - start < seconds:
        work()
        runs += 1
    return runs * images / (time.perf_counter() - start)


def _crops(classifier: Classifier, images: Sequence[bytes]) -> Any:
    """The device decoder's crops on the host, ``(N, C, H, W) uint8``, waited for."""
    crops, _ = classifier.prepare_crops(images)
    return crops.tensor.cpu().numpy()


def decode(ctx: Context, budget: Budget, out: Figures) -> None:
    """See the module docstring."""

    device = Device.gpu(0) if ctx.gpu else Device.cpu()
    images, what = jpegs(ctx.sizes.agreement_images)
    out.set("images", what)
    where = "GPU 0 (nvJPEG)" if ctx.gpu else "the CPU (torchvision's libjpeg-turbo)"
    print(f"# decode = gpu on {where} vs decode = cpu (OpenCV); {len(images)} {what}")
    problems: list[str] = []
    for name in NETS:
        if not budget.allows(15):
            raise Partial(f"budget: {name} left out")
        try:
            deploy, weights, source = ctx.net_files(name)
        except LookupError as exc:
            out.note(str(exc))
            continue
        engine = load("torch:fp32", deploy, weights, ctx.threads, device)
        assert isinstance(engine, DecodesOnDevice)
        assert isinstance(engine, TakesPixels)
        pre = preprocessor(name, deploy)
        on_device = Classifier(engine, pre, False, ctx.threads, decode="gpu")
        on_host = Classifier(engine, pre, False, ctx.threads)
        host, outcomes = on_host.prepare_pixels(images)
        if any(outcomes):
            raise Failed(f"{name}: the host refused some of the JPEGs: {outcomes}")
        got = _crops(on_device, images)
        delta = np.abs(got.astype(np.int16) - host.astype(np.int16))
        p_host = engine.forward_pixels(host, pre.normalization)
        p_device = engine.forward_pixels(got, pre.normalization)
        same = int((p_host.argmax(1) == p_device.argmax(1)).sum())
        figures = {
            "weights": source,
            "max_level_diff": int(delta.max()),
            "mean_level_diff": float(delta.mean()),
            "share_differing": float((delta > 0).mean()),
            "max_dp": float(np.abs(p_host - p_device).max()),
            "top1_same": same,
            "images": len(images),
        }
        print(
            f"{name:<24} pixels: max |d| {figures['max_level_diff']} levels, mean "
            f"{figures['mean_level_diff']:.3f}, {figures['share_differing']:.1%} differ; "
            f"probabilities: max |dp| {figures['max_dp']:.2e}, top-1 same {same}/{len(images)}",
            flush=True,
        )
        if not ctx.gpu and figures["max_level_diff"] != 0:
            problems.append(f"{name}: on the CPU the crops differ from the host's")
        out.set("nets", name, "figures", figures)
        if name == NETS[0]:
            _rates(ctx, budget, out, name, on_device, on_host, images)
        on_device.close()
        on_host.close()
    if problems:
        raise Failed("; ".join(problems))


def _rates(
    ctx: Context,
    budget: Budget,
    out: Figures,
    name: str,
    on_device: Classifier,
    on_host: Classifier,
    images: list[bytes],
) -> None:
    """Decode + squash + crop, images/s, device decoder vs the host's threads, at the run's
    two largest batch sizes of 8 or more (32 and 128; a quick run: 8)."""
    import torch

    def sync() -> None:
        if ctx.gpu:
            torch.cuda.synchronize()

    for size in [b for b in ctx.sizes.batches if b >= 8][-2:]:
        if not budget.allows(5):
            raise Partial(f"budget: decode rates at batch {size} left out")
        batch = [images[i % len(images)] for i in range(size)]

        def device_batch(batch: list[bytes] = batch) -> None:
            on_device.prepare_crops(batch)
            sync()

        def host_batch(batch: list[bytes] = batch) -> None:
            on_host.prepare_pixels(batch)

        device_rate = _rate(device_batch, size, ctx.sizes.seconds)
        host_rate = _rate(host_batch, size, ctx.sizes.seconds)
        out.set("nets", name, "rates", str(size), {"device": device_rate, "host": host_rate})
        print(
            f"{name:<24} batch {size:>3}: device {device_rate:8.1f} img/s, host "
            f"({ctx.threads} threads) {host_rate:8.1f} img/s, {device_rate / host_rate:.2f}x",
            flush=True,
        )
