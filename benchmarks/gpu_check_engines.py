"""benchmarks/gpu_check.py's engine sections: weights, parity, agreement, throughput.

Each is ``section(ctx, budget, out)``: it prints its table, records its figures in ``out`` as
it goes, and raises :class:`~benchmarks.gpu_check_runner.Skip`, ``Partial`` or ``Failed``
when it could not run, left work out for its budget, or found a figure past its bound.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.engines import Row, batch_agreement, batch_rows, forward_all, gpu_specs, load
from benchmarks.gpu_check_context import Context, jpegs, net_batch
from benchmarks.gpu_check_runner import Budget, Failed, Figures, Partial, Skip
from gre.messages import Device
from gre.model.engines import caffe_importable
from gre.model.engines.opencv import opencv_reads_caffe

#: fp32 torch against a CPU reference: the largest probability difference allowed (that of
#: tests/model/test_engine_torch.py, where torch on the CPU meets pycaffe).
PROB_BOUND = 1e-5


def _device(ctx: Context) -> Device:
    return Device.gpu(0) if ctx.gpu else Device.cpu()


def _free() -> None:
    """Drop the engines just used, and on a GPU their cached memory."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def weights(ctx: Context, budget: Budget, out: Figures) -> None:
    """Seeded random weights for the zoo nets (benchmarks/gpu_check_weights.py: zoo.py's
    cache, pycaffe, or gre's own writer), made or found for the later sections."""
    from benchmarks.gpu_check_weights import weights_for

    wanted = [n for n in ctx.nets() if n != "open_nsfw"]
    if ctx.sizes.nets is not None:  # --quick: the nets it runs, and CaffeNet for GRE's hey run
        wanted += ["bvlc_reference_caffenet"]
    available = ctx.zoo_nets()
    missing = [n for n in dict.fromkeys(wanted) if n not in available]
    wanted = [n for n in dict.fromkeys(wanted) if n in available]
    if not wanted:
        raise Skip(f"no zoo deploy prototxt in the shared folder ({ctx.shared}): only open_nsfw")
    if missing:
        out.note(f"no deploy prototxt for {', '.join(missing)}")
    print(f"{'net':<24} {'source':<26} {'MiB':>6} {'seconds':>7}  path")
    left_out = []
    for name in wanted:
        if not budget.allows(15):  # CaffeNet's 61 M weights take ~7 s on 2 cores
            left_out.append(name)
            continue
        deploy = Path(ctx.shared or "") / "models" / name / "deploy.prototxt"
        start = time.perf_counter()
        try:
            path, source = weights_for(deploy, name, ctx.weights)
        except Exception as exc:  # one net's trouble: recorded, the next one is made
            out.set("nets", name, {"error": f"{type(exc).__name__}: {exc}"})
            print(f"{name:<24} failed: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - start
        mib = path.stat().st_size / 2**20
        out.set(
            "nets",
            name,
            {
                "path": str(path),
                "source": source,
                "mib": round(mib, 1),
                "seconds": round(seconds, 2),
            },
        )
        print(f"{name:<24} {source:<26} {mib:6.1f} {seconds:7.1f}  {path}", flush=True)
    failed = [n for n, f in out.figures.get("nets", {}).items() if "error" in f]
    if failed:
        raise Failed(f"no weights for {', '.join(failed)}")
    if left_out:
        raise Partial(f"budget: no weights made for {', '.join(left_out)}")


def _max_dp(a: Any, b: Any) -> float:
    return float(np.abs(a - b).max())


class Tally:
    """What a per-net loop could not do: nets it left out for the budget, nets without
    weights, nets whose work raised (an engine that does not load, say: recorded, and the
    next net runs)."""

    def __init__(self) -> None:
        self.left_out: list[str] = []
        self.no_weights: list[str] = []
        self.errors: list[str] = []

    def failed(self, name: str, exc: Exception, out: Figures) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        self.errors.append(f"{name}: {error}")
        out.set("errors", name, error)
        print(f"{name:<24} failed: {error}", flush=True)

    def finish(self, out: Figures, over: str = "") -> None:
        """Raise Failed (errors, or ``over``: figures past their bounds), else Partial
        (nets left out); nets without weights are a note."""
        if self.no_weights:
            out.note("; ".join(self.no_weights))
        problems = ([over] if over else []) + self.errors
        if problems:
            raise Failed("; ".join(problems))
        if self.left_out:
            raise Partial(f"budget: {', '.join(self.left_out)} left out")


def parity(ctx: Context, budget: Budget, out: Figures) -> None:
    """fp32: the torch engine on the device (as served: CUDA graphs and the other levers on)
    against the CPU references, opencv (and pycaffe where importable) and, on a GPU, the
    torch engine on the CPU: the largest ``|p - p_ref|`` and top-1 agreement per net."""
    device = _device(ctx)
    images, what = jpegs(ctx.sizes.parity_images)
    out.set("images", what)
    subject = "torch:fp32+graphs" if ctx.gpu else "torch:fp32"
    # An OpenCV without the Caffe importer (OpenCV 5, as on some GPU images) is no reference.
    refs = ["opencv"] if opencv_reads_caffe() else []
    refs += ["caffe"] if caffe_importable() else []
    refs += ["torch:fp32"] if ctx.gpu else []
    if not refs:
        raise Skip("no CPU reference: OpenCV has no Caffe importer and pycaffe is absent")
    if not opencv_reads_caffe():
        out.set("left_out", f"opencv: OpenCV {cv2.__version__} has no Caffe importer")
    where = "GPU 0" if ctx.gpu else "the CPU (a CPU run: the same code, device = CPU)"
    print(f"# fp32 {subject} on {where} vs {', '.join(refs)} on the CPU; {len(images)} {what}")
    print(f"# bound: max |dp| <= {PROB_BOUND:g} against each reference")
    out.set("subject", f"{subject} on {device}")
    out.set("bound", PROB_BOUND)
    tally, over = Tally(), []
    for name in ctx.nets():
        if not budget.allows(10):
            tally.left_out.append(name)
            continue
        try:
            deploy, weights, source = ctx.net_files(name)
        except LookupError as exc:
            tally.no_weights.append(str(exc))
            continue
        try:
            batch = net_batch(name, deploy, images, len(images))
            got = forward_all(load(subject, deploy, weights, ctx.threads, device), batch)
            figures: dict[str, Any] = {"weights": source, "images": len(batch), "vs": {}}
            cells = []
            for ref in refs:
                engine = load(ref, deploy, weights, ctx.threads, Device.cpu())
                expected = forward_all(engine, batch)
                same = int((expected.argmax(1) == got.argmax(1)).sum())
                dp = _max_dp(got, expected)
                figures["vs"][f"{ref} cpu"] = {"max_dp": dp, "top1_same": same}
                cells.append(f"{ref}: {dp:.2e} ({same}/{len(batch)})")
            within = all(v["max_dp"] <= PROB_BOUND for v in figures["vs"].values())
            figures["within_bound"] = within
            out.set("nets", name, figures)
            if not within:
                over.append(name)
            print(
                f"{name:<24} {'   '.join(cells)}   {'ok' if within else 'OVER BOUND'}", flush=True
            )
        except Exception as exc:  # this net's trouble: recorded, the next net runs
            tally.failed(name, exc, out)
        finally:
            _free()
    tally.finish(out, f"max |dp| over {PROB_BOUND:g} for {', '.join(over)}" if over else "")


def agreement(ctx: Context, budget: Budget, out: Figures) -> None:
    """The torch engine's fp16 and bf16 against its own fp32 on the device (eager: graphs do
    not change the arithmetic): top-1 agreement, largest ``|dp|``, the fp32 margin of the
    images whose top-1 changed (benchmarks.engines.agreement)."""
    device = _device(ctx)
    images, what = jpegs(ctx.sizes.agreement_images)
    out.set("images", what)
    print(f"# torch on {device}: bf16 and fp16 vs fp32, {len(images)} {what}")
    header = f"{'net':<24} {'precision':<9} {'top-1 same':>12} {'max |dp|':>9} {'flip margin':>11}"
    print(header)
    print("-" * len(header))
    tally = Tally()
    for name in ctx.nets():
        if not budget.allows(10):
            tally.left_out.append(name)
            continue
        try:
            deploy, weights, _ = ctx.net_files(name)
        except LookupError as exc:
            tally.no_weights.append(str(exc))
            continue
        try:
            batch = net_batch(name, deploy, images, len(images))
            found = batch_agreement(deploy, weights, batch, ("bf16", "fp16"), ctx.threads, device)
            for precision, a in found.items():
                figures = {
                    "images": a.images,
                    "top1_same": a.top1_same,
                    "max_dp": a.max_dp,
                    "flipped_margin": a.flipped_margin,
                }
                out.set("nets", name, precision, figures)
                same = f"{a.top1_same}/{a.images}"
                print(
                    f"{name:<24} {precision:<9} {same:>12} {a.max_dp:9.2e} "
                    f"{a.flipped_margin:11.2e}",
                    flush=True,
                )
        except Exception as exc:  # this net's trouble: recorded, the next net runs
            tally.failed(name, exc, out)
        finally:
            _free()
    tally.finish(out)


def _specs(ctx: Context) -> list[str]:
    if ctx.gpu:  # opencv (CPU-only from pip) would only time the CPU at batch 128
        return gpu_specs(["torch:fp32", "torch:fp16", "torch:bf16"], "both")
    if ctx.sizes.nets is not None:  # --quick on the CPU: fp16's CPU kernels take seconds
        return ["opencv", "torch:fp32", "torch:bf16"]
    return ["opencv", "torch:fp32", "torch:bf16", "torch:fp16"]


def throughput(ctx: Context, budget: Budget, out: Figures) -> None:
    """Engine forward images/s per net, batch size and engine (benchmarks.engines: median
    forward, best in brackets); on a GPU each precision eager and with CUDA graphs
    (``+graphs``); each net gets an equal share of what is left of the budget."""
    device = _device(ctx)
    specs = _specs(ctx)
    if not ctx.gpu and "torch:fp16" not in specs:
        out.note("fp16 left out of a quick CPU run (its CPU kernels are slow)")
    images, what = jpegs(8)
    out.set("images", what)
    out.set("seconds_per_batch", ctx.sizes.seconds)
    print(
        f"# forward only, on {device}; {ctx.sizes.seconds:g} s per batch size, engines "
        f"alternating; {what}"
    )
    header = f"{'net':<24} {'batch':>5} {'engine':<18} {'device':<6} {'img/s [best]':>17} {'ms':>8}"
    print(header)
    print("-" * len(header))
    nets = list(ctx.sizes.throughput_nets)
    tally, rows = Tally(), []
    for index, name in enumerate(nets):
        share = Budget(budget.left() / (len(nets) - index))
        try:
            deploy, weights, _ = ctx.net_files(name)
        except LookupError as exc:
            tally.no_weights.append(str(exc))
            continue
        if not share.allows(10):
            tally.left_out.append(name)
            continue
        try:
            engines = {s: load(s, deploy, weights, ctx.threads, device) for s in specs}
            for size in ctx.sizes.batches:
                # Warm-ups (graph captures, cuDNN autotuning) cost about as much as the timing.
                if not share.allows(2 * ctx.sizes.seconds + 2) or not budget.allows(5):
                    tally.left_out.append(f"{name} batch {size}")
                    continue
                batch = net_batch(name, deploy, images, size)
                for row in batch_rows(name, engines, batch, ctx.sizes.seconds):
                    rows.append(row)
                    _print_row(row)
                out.set("rows", [_row_figures(r) for r in rows])
        except Exception as exc:  # this net's trouble: recorded, the next net runs
            tally.failed(name, exc, out)
        finally:
            engines = {}
            _free()
    tally.finish(out)


def _row_figures(row: Row) -> dict[str, Any]:
    return {
        "net": row.model,
        "batch": row.batch,
        "engine": row.engine,
        "device": row.device,
        "images_s": round(row.images_s, 1),
        "best_images_s": round(row.best_images_s, 1),
        "ms": round(row.batch / row.images_s * 1e3, 3),
        "forwards": row.forwards,
    }


def _print_row(row: Row) -> None:
    cell = f"{row.images_s:8.1f} [{row.best_images_s:6.1f}]"
    ms = row.batch / row.images_s * 1e3
    print(
        f"{row.model:<24} {row.batch:>5} {row.engine:<18} {row.device:<6} {cell:>17} {ms:8.2f}",
        flush=True,
    )
