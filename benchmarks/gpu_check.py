"""One command that checks gre on a GPU machine and measures it: set-up, ``gre info`` against
``nvidia-smi``, the front end's scaling with HTTP workers (null engine, every core), fp32
GPU-vs-CPU parity on every zoo net, fp16/bf16 agreement, engine images/s (CaffeNet,
GoogLeNet, open_nsfw; each precision, with and without CUDA graphs; batches 1, 8, 32, 128),
nvJPEG decode against OpenCV's (pixels, probabilities, images/s), the service at saturation
under the built-in client, and GRE's own ``hey -c 8`` run with CaffeNet beside GRE's 1984.57
req/s on 4x Titan X. Under 9 minutes on an H200 machine.

    python3 -m benchmarks.gpu_check [--device gpu|cpu] [--quick] [--out DIR] [--shared DIR]
                                    [--bundle DIR] [--sections NAME ...] [--budget-s 520]
                                    [--weights auto|zoo|gre]
    python3 -m benchmarks.gpu_check --prepare .whl     # here, with network: the bundle

benchmarks/gpu_check.md says how to run it (also on a machine without network) and what each
figure means. Set-up runs in this process and imports only the standard library; then each
section runs in a process of its own (benchmarks/gpu_check_runner.py) within its budget
(:data:`BUDGETS`), so that one failing, hanging or breaking its CUDA context leaves the next
ones running. ``--out DIR`` gets ``gpu_check.txt`` (everything printed) and
``gpu_check.json`` (every section's status, seconds and figures). Exit status 0 when no
section failed. ``--device cpu`` runs the same code with the CPU as the device: parity is
then the torch engine on the CPU against opencv (and pycaffe).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.gpu_check_context import FULL, QUICK, ROOT, Context
from benchmarks.gpu_check_runner import (
    EXIT_PARTIAL,
    EXIT_SKIPPED,
    EXIT_STOPPED,
    Budget,
    Failed,
    Figures,
    Log,
    Outcome,
    OverBudget,
    Partial,
    Plan,
    Skip,
    report,
    run_child,
    run_sections,
    summary_table,
)
from benchmarks.gpu_check_setup import prepare_bundle, setup, shared_folder, skip_reason

#: The sections after set-up, in order, with their budgets (s): 500 s together, which with
#: set-up's (about 20 s with wheels to install) fits the 520 s default total; a section
#: gets at most what is left of the total, so the whole run ends within it (plus at most
#: one section's :data:`~benchmarks.gpu_check_runner.KILL_GRACE_S`): under 9 minutes.
BUDGETS = {
    "info": 15.0,
    "scaling": 150.0,
    "weights": 45.0,
    "parity": 45.0,
    "agreement": 30.0,
    "throughput": 90.0,
    "decode": 25.0,
    "service": 60.0,
    "gre_hey": 40.0,
}
#: Seconds a section's own budget is short of the runner's, for its start and wind-down.
CHILD_MARGIN_S = 5.0


def section_function(name: str) -> Callable[[Context, Budget, Figures], None]:
    """The function of section ``name`` (imported here: only a section's process needs it)."""
    from benchmarks import (
        gpu_check_decode,
        gpu_check_engines,
        gpu_check_scaling,
        gpu_check_service,
    )

    functions: dict[str, Callable[[Context, Budget, Figures], None]] = {
        "info": gpu_check_service.info,
        "scaling": gpu_check_scaling.scaling,
        "weights": gpu_check_engines.weights,
        "parity": gpu_check_engines.parity,
        "agreement": gpu_check_engines.agreement,
        "throughput": gpu_check_engines.throughput,
        "decode": gpu_check_decode.decode,
        "service": gpu_check_service.service,
        "gre_hey": gpu_check_service.gre_hey,
    }
    return functions[name]


def _stop(signum: int, frame: FrameType | None) -> None:
    raise OverBudget


def run_section(name: str, work: Path, budget_s: float) -> int:
    """A section's process: run it, leave its figures in ``work/<name>.json``; the exit
    status says how it ended (benchmarks.gpu_check_runner)."""
    signal.signal(signal.SIGTERM, _stop)
    out = Figures(work / f"{name}.json")
    try:
        section_function(name)(Context.load(work), Budget(budget_s), out)
    except Skip as exc:
        out.note(str(exc))
        print(f"skipped: {exc}")
        return EXIT_SKIPPED
    except Partial as exc:
        out.note(str(exc))
        print(f"partial: {exc}")
        return EXIT_PARTIAL
    except Failed as exc:
        out.note(str(exc))
        print(f"failed: {exc}")
        return 1
    except OverBudget:
        out.note("stopped by the runner: its budget was spent")
        return EXIT_STOPPED
    except Exception as exc:  # the section's own failure: its traceback, then the next one
        traceback.print_exc(file=sys.stdout)
        out.note(f"{type(exc).__name__}: {exc}"[:300])
        return 1
    return 0


def headline(outcomes: list[Outcome]) -> list[str]:
    """The key figures, a line each, from the sections' figures."""
    by = {o.name: o.figures for o in outcomes}
    lines = []
    nets = by.get("parity", {}).get("nets", {})
    if nets:
        worst = max(
            (v["max_dp"], f"{n} vs {r}") for n, f in nets.items() for r, v in f["vs"].items()
        )
        lines.append(
            f"parity: {len(nets)} nets, largest max |dp| {worst[0]:.2e} ({worst[1]}), "
            f"bound {by['parity'].get('bound')}"
        )
    agree = by.get("agreement", {}).get("nets", {})
    for precision in ("bf16", "fp16"):
        found = [f[precision] for f in agree.values() if precision in f]
        if found:
            same = sum(f["top1_same"] for f in found)
            total = sum(f["images"] for f in found)
            worst_dp = max(f["max_dp"] for f in found)
            lines.append(
                f"{precision} vs fp32: top-1 same {same}/{total}, largest |dp| {worst_dp:.2e}"
            )
    curve = by.get("scaling", {}).get("curve", {})
    if curve:
        points = ", ".join(f"w{n} {p['tiny_req_s']:.0f}" for n, p in curve.items())
        widest = curve[max(curve, key=int)]
        lines.append(
            f"scaling (null engine, {by['scaling'].get('cores')} cores): 16x16 req/s {points}; "
            f"cat.jpg / decode limit at w{max(curve, key=int)}: "
            f"{widest['cat_over_decode_limit']:.2f}"
        )
    best: dict[str, tuple[float, str]] = {}
    for row in by.get("throughput", {}).get("rows", []):
        cell = (row["images_s"], f"{row['engine']} batch {row['batch']}")
        best[row["net"]] = max(best.get(row["net"], cell), cell)
    for net, (rate, where) in best.items():
        lines.append(f"throughput {net}: best {rate:.1f} img/s ({where})")
    for net, found in by.get("decode", {}).get("nets", {}).items():
        figures, rates = found.get("figures"), found.get("rates", {})
        if figures:
            fastest = max((r["device"] / r["host"], b) for b, r in rates.items()) if rates else None
            speed = f", {fastest[0]:.2f}x the host at batch {fastest[1]}" if fastest else ""
            lines.append(
                f"decode gpu {net}: max |d| {figures['max_level_diff']} levels, max |dp| "
                f"{figures['max_dp']:.2e}, top-1 same {figures['top1_same']}/"
                f"{figures['images']}{speed}"
            )
    for label, run in by.get("service", {}).get("runs", {}).items():
        lines.append(
            f"service ({label}): {run['req_s']:.1f} req/s at concurrency "
            f"{run['concurrency']}, p99 {run['p99_ms']:.1f} ms"
        )
    hey = by.get("gre_hey", {}).get("result")
    if hey:
        lines.append(
            f"GRE's hey run: {hey['req_s']:.2f} req/s ({hey['ratio_to_gre']:.2f}x GRE's "
            f"{hey['gre_req_s']} on 4x Titan X)"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--quick", action="store_true", help="2 nets, batches 1 and 8, short runs")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gre-gpu-check")
    parser.add_argument("--shared", type=Path, help="default: ../shared, else BUNDLE/shared")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=ROOT / ".whl",
        help="wheels, hey and shared/ for a machine without network",
    )
    parser.add_argument("--sections", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    parser.add_argument("--budget-s", type=float, default=520.0, help="the whole run, s")
    parser.add_argument(
        "--weights",
        choices=("auto", "zoo", "gre"),
        default="auto",
        help="zoo nets' random weights: zoo.py (pycaffe) or gre's own writer",
    )
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="make the bundle DIR, exit")
    parser.add_argument(
        "--bundle-python", default="3.12", help="--prepare: the GPU machine's Python version"
    )
    parser.add_argument("--section", help=argparse.SUPPRESS)  # a section's own process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--section-budget-s", type=float, default=600.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section:
        return run_section(args.section, args.work, args.section_budget_s)
    if args.prepare:
        shared = shared_folder(args.shared, args.prepare)
        for line in prepare_bundle(args.prepare, shared, args.bundle_python):
            print(line)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_check.txt")
    command = shlex.join(["python3", "-m", "benchmarks.gpu_check", *(argv or sys.argv[1:])])
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    log(f"$ {command}   ({started}, device {args.device}{', quick' if args.quick else ''})")
    begin = time.monotonic()
    log("== setup")
    setup_outcome, facts = setup(args.bundle, args.shared, args.device, log)
    log(
        f"-- setup: {setup_outcome.status}"
        + (f": {setup_outcome.why}" if setup_outcome.why else "")
    )
    work = Path(tempfile.mkdtemp(prefix="gre-gpu-check-"))
    ctx = Context(
        args.device,
        QUICK if args.quick else FULL,
        os.cpu_count() or 1,
        args.weights,
        facts["shared"],
        str(work),
        facts,
    )
    ctx.save()
    env = {**os.environ, "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}
    if ctx.shared:  # benchmarks.data and .corpus read it when imported
        env["GRE_SHARED"] = ctx.shared

    def plan(name: str) -> Plan:
        def run(budget_s: float) -> Outcome:
            command = [
                sys.executable,
                "-m",
                "benchmarks.gpu_check",
                "--section",
                name,
                "--work",
                str(work),
                "--section-budget-s",
                str(max(budget_s - CHILD_MARGIN_S, 1.0)),
            ]
            return run_child(name, command, budget_s, work / f"{name}.json", log, env, ROOT)

        return Plan(name, BUDGETS[name], run, skip_reason(name, facts, args.device))

    total = args.budget_s - (time.monotonic() - begin)
    outcomes = [setup_outcome, *run_sections([plan(n) for n in args.sections], total, log)]
    log("")
    log(summary_table(outcomes))
    log("")
    for line in headline(outcomes):
        log(line)
    header = {
        "command": command,
        "started_at": started,
        "device": args.device,
        "quick": args.quick,
        "machine": _machine(),
    }
    data = report(outcomes, header) | {"wall_s": round(time.monotonic() - begin, 1)}
    (args.out / "gpu_check.json").write_text(json.dumps(data, indent=1, default=str))
    log(
        f"wrote {args.out / 'gpu_check.txt'} and {args.out / 'gpu_check.json'} "
        f"({data['wall_s']:.0f} s in all)"
    )
    log.close()
    shutil.rmtree(work, ignore_errors=True)  # the sections' figures are in the report
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _machine() -> dict[str, Any]:
    """benchmarks.machine.machine(), or why not (it imports gre, which set-up may lack)."""
    try:
        from benchmarks.machine import machine

        return machine()
    except Exception as exc:  # the report is written anyway
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
