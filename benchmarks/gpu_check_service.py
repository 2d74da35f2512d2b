"""benchmarks/gpu_check.py's service sections: info, service, gre_hey (see gpu_check_engines
for the sections' shape)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_context import CAFFENET, ROOT, Context, jpegs
from benchmarks.gpu_check_runner import Budget, Failed, Figures, Partial, Skip
from benchmarks.gpu_check_setup import nvidia_smi
from benchmarks.gre_hey import GRE_FIGURE, hey_command, run_hey

#: GRE's figure, req/s (``"1984.57 req/s on 4 x NVIDIA Titan X ..."``).
GRE_RPS = float(GRE_FIGURE.split()[0])


def _devices(ctx: Context) -> str:
    return "devices=all" if ctx.gpu else "devices=cpu"


def compare_gpus(gre: list[dict[str, Any]], smi: list[dict[str, str]]) -> list[str]:
    """Where gre's GPUs (NVML, memory in bytes) and nvidia-smi's (MiB) disagree, in words:
    count, index, name, uuid, driver, and total memory beyond 1 % (``[]``: they agree)."""
    problems = []
    if len(gre) != len(smi):
        problems.append(f"gre sees {len(gre)} GPUs, nvidia-smi {len(smi)}")
    by_index = {str(g["index"]): g for g in gre}
    for s in smi:
        g = by_index.get(s["index"])
        if g is None:
            problems.append(f"GPU {s['index']} ({s['name']}): not in gre info")
            continue
        pairs = [
            ("name", g["name"], s["name"]),
            ("uuid", g["uuid"], s["uuid"]),
            ("driver", g["driver_version"], s["driver_version"]),
        ]
        problems += [
            f"GPU {s['index']} {what}: gre {a!r}, nvidia-smi {b!r}"
            for what, a, b in pairs
            if a != b
        ]
        gre_mib, smi_mib = int(g["memory_total"]) / 2**20, float(s["memory.total"])
        if abs(gre_mib - smi_mib) > max(1.0, 0.01 * smi_mib):
            problems.append(
                f"GPU {s['index']} memory: gre {gre_mib:.0f} MiB, nvidia-smi {smi_mib:.0f}"
            )
    return problems


def info(ctx: Context, budget: Budget, out: Figures) -> None:
    """``gre info --json`` (model, GPUs by NVML, replica plan) beside ``nvidia-smi``'s GPUs."""
    command = [sys.executable, "-m", "gre", "info", "--json", "--set", _devices(ctx)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=max(5.0, budget.left() - 5),
        check=False,
    )
    if done.returncode != 0:
        raise Failed(f"gre info failed: {done.stderr.strip()[-300:]}")
    facts = json.loads(done.stdout)
    out.set("gre_info", facts)
    model = facts["model"]
    print(f"$ gre info --json --set {_devices(ctx)}")
    print(
        f"model {model['name']}, engine {model['engine']}, precision {model['precision']}; "
        f"NVML: {facts['nvml']}"
    )
    for r in facts["replicas"]:
        print(f"  replica {r['index']}: {r['device']}, {r['engine']} {r['precision']}")
    for g in facts["gpus"]:
        print(
            f"  gre:        GPU {g['index']} {g['name']} {g['uuid']} driver "
            f"{g['driver_version']} (CUDA <= {g['cuda_driver']}) {g['memory_total'] // 2**20} "
            f"MiB total, {g['memory_free'] // 2**20} free; {g['compatibility']}"
        )
    smi = nvidia_smi()
    out.set("nvidia_smi", smi)
    if isinstance(smi, str):
        print(f"  nvidia-smi: {smi}")
        if ctx.gpu:
            raise Failed(smi)
        out.note(f"a CPU run: {smi}, nothing to compare")
        return
    for s in smi:
        print(
            f"  nvidia-smi: GPU {s['index']} {s['name']} {s['uuid']} driver "
            f"{s['driver_version']} {s['memory.total']} MiB total, {s['memory.free']} free"
        )
    problems = compare_gpus(facts["gpus"], smi)
    out.set("agree", not problems)
    print("gre info and nvidia-smi agree" if not problems else "\n".join(problems))
    if problems:
        raise Failed("; ".join(problems))


async def saturate(
    url: str, images: list[bytes], concurrency: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """The built-in client's closed loop at ``concurrency`` against ``url``: warm up, then
    one ``seconds`` window: req/s, latency (ms), errors, server timings, mean batch size."""
    from benchmarks.httpclient import Target
    from benchmarks.loadgen import ClosedLoop, image_requests
    from benchmarks.stats import mean_batch_size, summarize
    from benchmarks.steady import RecorderWindows
    from benchmarks.sweep import BatchProbe

    target = Target.parse(url)
    probe = BatchProbe(target)
    load = ClosedLoop(target, image_requests(target, images), concurrency)
    await load.start()
    try:
        await asyncio.sleep(warmup_s)
        windows = RecorderWindows(load.recorder)
        before = await probe()
        samples, elapsed, _ = await windows.next_window(seconds)
        after = await probe()
    finally:
        await load.stop()
    s = summarize(samples, elapsed)
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "req_s": s.throughput,
        "p50_ms": s.p50_ms,
        "p99_ms": s.p99_ms,
        "errors": s.errors,
        "server_ms": s.server_ms,
        "mean_batch": mean_batch_size(before, after),
    }


def _corpus(ctx: Context) -> tuple[list[bytes], str]:
    """The images the service sections POST: the shared photos, else synthetic JPEGs."""
    from benchmarks.corpus import load_corpus

    try:
        corpus = load_corpus()
        return list(corpus.images), corpus.description
    except FileNotFoundError as exc:
        images, _ = jpegs(3)
        return images[:3], f"3 synthetic JPEGs ({exc})"


def service(ctx: Context, budget: Budget, out: Figures) -> None:
    """gre serving the default model (open_nsfw; engine torch on a GPU, opencv on the CPU) at
    saturation under the built-in client (benchmarks.loadgen, closed loop), once per config
    variant, after the client's own ceiling against a trivial endpoint."""
    import uvloop

    from benchmarks.ceiling import measure_ceiling
    from benchmarks.servers import GRE_BENCH_SETTINGS, free_port, running_gre

    images, what = _corpus(ctx)
    sizes = ctx.sizes
    out.set("corpus", what)
    ceiling = uvloop.run(
        measure_ceiling(
            "python", images, Path("unused"), sizes.concurrency, min(2.0, sizes.measure_s)
        )
    )
    out.set("client_ceiling_req_s", ceiling)
    print(f"# built-in client, closed loop, concurrency {sizes.concurrency}; {what}")
    print(f"client ceiling (trivial endpoint): {ceiling:.0f} req/s")
    engine = "torch" if ctx.gpu else "opencv"
    left_out = []
    for variant in sizes.variants:
        label = " ".join(variant) or "defaults"
        if not budget.allows(sizes.warmup_s + sizes.measure_s + 25):  # + start and warm-up
            left_out.append(label)
            continue
        settings = [*GRE_BENCH_SETTINGS, _devices(ctx), *variant]
        with running_gre(port=free_port(), engine=engine, settings=settings) as base:
            result = uvloop.run(
                saturate(
                    f"{base}/api/classify",
                    images,
                    sizes.concurrency,
                    sizes.warmup_s,
                    sizes.measure_s,
                )
            )
        result["settings"] = settings
        result["client_limited"] = result["req_s"] > 0.8 * ceiling
        out.set("runs", label, result)
        server = ", ".join(f"{k} {v:.2f} ms" for k, v in result["server_ms"].items())
        batch = result["mean_batch"]
        print(
            f"open_nsfw, engine {engine}, {label}: {result['req_s']:.1f} req/s, p50 "
            f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors "
            f"{result['errors'] or 0}, mean batch {batch if batch is None else f'{batch:.1f}'}"
            f"; server: {server or 'n/a'}"
            + ("  (client-limited: over 80 % of its ceiling)" if result["client_limited"] else ""),
            flush=True,
        )
    if left_out:
        raise Partial(f"budget: {', '.join(left_out)} left out")


def caffenet_args(ctx: Context) -> tuple[list[str], str]:
    """``gre serve`` arguments for CaffeNet (benchmarks.gre_hey.caffenet_args, with the
    weights the weights section made); and where the weights come from.

    Raises:
        Skip: no CaffeNet files.
    """
    real = ROOT / "models" / CAFFENET / f"{CAFFENET}.caffemodel"
    if real.is_file():
        return ["--config", str(ROOT / "config" / f"{CAFFENET}.toml")], f"real weights ({real})"
    try:
        deploy, weights, source = ctx.net_files(CAFFENET)
    except LookupError as exc:
        raise Skip(str(exc)) from exc
    shared = Path(ctx.shared or "")
    settings: dict[str, Any] = {"name": CAFFENET, "deploy": deploy, "weights": weights}
    words, mean = (
        shared / "data/ilsvrc12/synset_words.txt",
        shared / "data/ilsvrc12/ilsvrc_2012_mean.npy",
    )
    if words.is_file():
        settings["synset_words"] = words
    if mean.is_file():
        settings |= {"mean": mean, "mean_mode": "image"}
    else:
        settings["mean"] = "[104.0, 117.0, 123.0]"
    args = [x for key, value in settings.items() for x in ("--set", f"{key}={value}")]
    return args, f"seeded random weights, {source} ({weights})"


def gre_hey(ctx: Context, budget: Budget, out: Figures) -> None:
    """GRE's published run against gre (benchmarks.gre_hey): CaffeNet, ``hey -c 8 -n N -m
    POST -D cat.jpg``; N from the sizes, fewer when the warm-up's rate says it would not fit
    the budget."""
    from benchmarks.heyload import hey_path
    from benchmarks.servers import GRE_BENCH_SETTINGS, free_port, running_gre

    try:
        hey_path()
    except RuntimeError as exc:
        raise Skip(str(exc)) from exc
    args, weights = caffenet_args(ctx)
    image = Path(ctx.shared or "/nonexistent") / "images" / "cat.jpg"
    if not image.is_file():
        image = Path(tempfile.mkdtemp()) / "image.jpg"
        image.write_bytes(jpegs(1)[0][0])
    engine = "torch" if ctx.gpu else "opencv"
    settings = [*GRE_BENCH_SETTINGS, _devices(ctx)]
    with running_gre(port=free_port(), engine=engine, args=args, settings=settings) as base:
        url = f"{base}/api/classify"
        warm = run_hey(hey_command(url, image, 8, ctx.sizes.hey_warmup))
        fits = int(warm.rps * max(budget.left() - 10, 1) * 0.7)
        requests = max(100, min(ctx.sizes.hey_requests, fits))
        command = hey_command(url, image, 8, requests)
        summary = run_hey(command)
    p = summary.percentiles_ms
    out.set(
        "result",
        {
            "command": " ".join(command),
            "engine": engine,
            "weights": weights,
            "req_s": summary.rps,
            "p50_ms": p.get(50),
            "p99_ms": p.get(99),
            "statuses": summary.statuses,
            "gre_req_s": GRE_RPS,
            "ratio_to_gre": summary.rps / GRE_RPS,
        },
    )
    print(f"gre: CaffeNet, {weights}, engine {engine}, {_devices(ctx)}")
    print("$ " + " ".join(command))
    print(
        f"this machine: {summary.rps:.2f} req/s, p50 {p.get(50, float('nan')):.1f} ms, p99 "
        f"{p.get(99, float('nan')):.1f} ms, responses {summary.statuses}"
    )
    print(f"GRE's README: {GRE_FIGURE}; this machine / GRE: {summary.rps / GRE_RPS:.2f}x")
    if requests < ctx.sizes.hey_requests:
        raise Partial(f"budget: -n {requests} instead of {ctx.sizes.hey_requests}")
    bad = {code: n for code, n in summary.statuses.items() if code != "200"}
    if bad:
        raise Failed(f"non-200 responses: {bad}")
