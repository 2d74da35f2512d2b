"""``python -m benchmarks``: load sweeps, the client's ceiling, gre vs peers, GRE's hey run.

    python -m benchmarks sweep URL [--mode closed|open] [--concurrency 1,2,4] [--rates 50,100]
    python -m benchmarks ceiling [--client python,hey]
    python -m benchmarks compare --name NAME [--servers gre,naive,bentoml,rayserve]
    python -m benchmarks report --name NAME
    python -m benchmarks gre-hey [-n 2000]

See README.md, "Benchmarks".
"""

from __future__ import annotations

import datetime
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop
from rich.console import Console
from rich.table import Table

from benchmarks.ceiling import CLIENTS, measure_ceiling
from benchmarks.compare import CompareSpec, compare, load_comparison
from benchmarks.corpus import Corpus, load_corpus
from benchmarks.machine import machine
from benchmarks.report import write_report
from benchmarks.results import RunResult
from benchmarks.runner import client_ceiling, sweep
from benchmarks.servers import GRE_BENCH_SETTINGS, peer_names
from benchmarks.steady import Settings
from benchmarks.sweep import CLIENT_LIMIT_FRACTION, SweepSpec

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CONCURRENCY = "1,2,4,8,16,32,64"
F = TypeVar("F", bound=Callable[..., Any])


def numbers(text: str) -> list[float]:
    """``"1,2,4"`` -> ``[1.0, 2.0, 4.0]``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"expected positive numbers, got {text!r}")
    return values


def window_options(command: F) -> F:
    """The steady-state options every measuring command takes."""
    options = [
        click.option(
            "--window-s",
            type=float,
            default=2.0,
            show_default=True,
            help="Seconds per measurement window.",
        ),
        click.option(
            "--tolerance",
            type=float,
            default=0.10,
            show_default=True,
            help="Windows agree when each is within this fraction of their mean.",
        ),
        click.option(
            "--stable-windows",
            type=int,
            default=3,
            show_default=True,
            help="Consecutive agreeing windows that make a steady state.",
        ),
        click.option(
            "--max-windows",
            type=int,
            default=10,
            show_default=True,
            help="Give up (step marked unstable) after this many windows.",
        ),
        click.option(
            "--warmup-s",
            type=float,
            default=1.0,
            show_default=True,
            help="Seconds of load before the first window.",
        ),
        click.option(
            "--corpus",
            type=click.Path(exists=True, path_type=Path),
            help="An image file or a directory of images (default: ../shared/images).",
        ),
        click.option(
            "--arrivals",
            type=click.Choice(["poisson", "constant"]),
            default="poisson",
            show_default=True,
            help="Open loop: gaps between arrivals.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from(options: dict[str, Any]) -> Settings:
    try:
        return Settings(
            window_s=options["window_s"],
            tolerance=options["tolerance"],
            stable_windows=options["stable_windows"],
            max_windows=options["max_windows"],
            warmup_s=options["warmup_s"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def corpus_from(path: Path | None) -> Corpus:
    try:
        return load_corpus(path)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None


def print_steps(run: RunResult, console: Console) -> None:
    """The run's steps as a table on stdout."""
    table = Table(title=f"{run.name}: {run.mode} loop, {run.url}")
    columns = [
        "load",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "queue ms",
        "inference ms",
        "batch",
        "notes",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for s in run.steps:
        notes = ([] if s.stable else ["unstable"]) + (
            ["client-limited"] if s.client_limited else []
        )
        table.add_row(
            f"{s.load:g}",
            f"{s.throughput:.1f}",
            f"{s.p50_ms:.2f}",
            f"{s.p90_ms:.2f}",
            f"{s.p95_ms:.2f}",
            f"{s.p99_ms:.2f}",
            f"{s.max_ms:.2f}",
            ", ".join(f"{k}:{v}" for k, v in s.errors.items()) or "0",
            f"{s.server_ms['queue']:.2f}" if "queue" in s.server_ms else "n/a",
            f"{s.server_ms['inference']:.2f}" if "inference" in s.server_ms else "n/a",
            f"{s.mean_batch_size:.2f}" if s.mean_batch_size is not None else "n/a",
            " ".join(notes),
        )
    console.print(table)


@click.group()
def main() -> None:
    """Benchmarks for gre: drive any URL that takes a JPEG POST, compare gre with its peers."""
    # An open loop may hold a connection per request in flight: raise the soft descriptor
    # limit to the hard one (capped) rather than fail with EMFILE at 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@main.command("sweep")
@click.argument("url")
@click.option("--mode", type=click.Choice(["closed", "open"]), default="closed", show_default=True)
@click.option(
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Closed loop: comma-separated concurrencies.",
)
@click.option("--rates", default="", help="Open loop: comma-separated request rates (req/s).")
@click.option(
    "--client",
    type=click.Choice(CLIENTS),
    default="python",
    show_default=True,
    help="python: the built-in client; hey: Debian's hey (closed loop, first image).",
)
@click.option(
    "--max-connections",
    type=int,
    default=1024,
    show_default=True,
    help="Open loop: most connections at once.",
)
@click.option(
    "--ceiling/--no-ceiling",
    default=True,
    show_default=True,
    help="Measure the client's own ceiling first (a trivial endpoint).",
)
@click.option("--name", help="Run name (default: sweep-<mode>-<time>).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Output directory (default: benchmarks/results/<name>).",
)
@window_options
def sweep_command(url: str, **options: Any) -> None:
    """Sweep concurrency (closed loop) or request rate (open loop) against URL.

    URL takes a POST of raw image bytes, e.g. http://127.0.0.1:8000/api/classify. Writes
    steps.csv, run.json and PNG plots; prints a table.
    """
    mode = options["mode"]
    loads = numbers(options["concurrency"] if mode == "closed" else options["rates"] or "")
    corpus = corpus_from(options["corpus"])
    try:
        spec = SweepSpec(
            url,
            mode,
            loads,
            options["client"],
            options["arrivals"] == "poisson",
            options["max_connections"],
            settings_from(options),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = options["name"] or f"sweep-{mode}-{stamp}"
    out = options["out"] or RESULTS / name
    console = Console(width=None if sys.stdout.isatty() else 160)
    ceiling = client_ceiling(spec, corpus) if options["ceiling"] else None
    if ceiling is not None:
        console.print(
            f"client ceiling ({spec.client}, trivial endpoint): {ceiling:.0f} req/s; steps above "
            f"{CLIENT_LIMIT_FRACTION * ceiling:.0f} req/s are flagged client-limited"
        )
    run = sweep(name, spec, corpus, out, ceiling)
    print_steps(run, console)
    console.print(f"wrote {out}/steps.csv, run.json and plots")


@main.command("ceiling")
@click.option(
    "--client",
    "clients",
    default=",".join(CLIENTS),
    show_default=True,
    help="Comma-separated clients to measure.",
)
@click.option("--concurrency", type=int, default=16, show_default=True)
@click.option("--seconds", type=float, default=3.0, show_default=True)
@click.option("--corpus", type=click.Path(exists=True, path_type=Path))
def ceiling_command(clients: str, concurrency: int, seconds: float, corpus: Path | None) -> None:
    """Each client's req/s against a trivial endpoint on this machine (its own ceiling)."""
    images = corpus_from(corpus)
    facts = machine()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores; corpus: {images.description}")
    for client in clients.split(","):
        if client not in CLIENTS:
            raise click.UsageError(f"unknown client {client!r}: {', '.join(CLIENTS)}")
        rate = uvloop.run(
            measure_ceiling(client, images.images, images.paths[0], concurrency, seconds)
        )
        print(f"{client:>6}: {rate:9.0f} req/s at concurrency {concurrency}")


@main.command("compare")
@click.option("--name", required=True, help="Report name: benchmarks/results/<name>.md")
@click.option("--servers", default="", help="Comma-separated (default: gre and every peer).")
@click.option("--engine", default="opencv", show_default=True, help="The engine every server uses.")
@click.option("--concurrency", default=DEFAULT_CONCURRENCY, show_default=True)
@click.option(
    "--rates",
    default="",
    help="Fixed rates (req/s; default: 25/50/75 % of the lowest saturation throughput).",
)
@click.option(
    "--null-concurrency",
    default="1,4,16,64",
    show_default=True,
    help="Concurrencies for the null-engine (overhead) sweep.",
)
@click.option(
    "--gre-set",
    "gre_settings",
    multiple=True,
    default=GRE_BENCH_SETTINGS,
    show_default=True,
    help="gre's --set KEY=VALUE for the comparison (repeatable).",
)
@click.option("--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@window_options
def compare_command(name: str, **options: Any) -> None:
    """gre against each peer: the same model, corpus and load, one server at a time.

    Writes benchmarks/results/<name>.md (tables, ratios, plots, commands, machine, versions)
    and the raw runs under benchmarks/results/<name>/.
    """
    servers = [s for s in options["servers"].split(",") if s] or ["gre", *peer_names()]
    corpus = corpus_from(options["corpus"])
    spec = CompareSpec(
        concurrencies=[int(c) for c in numbers(options["concurrency"])],
        rates=numbers(options["rates"]) if options["rates"] else None,
        null_concurrencies=[int(c) for c in numbers(options["null_concurrency"])],
        poisson=options["arrivals"] == "poisson",
        settings=settings_from(options),
        gre_settings=tuple(options["gre_settings"]),
    )
    probe = SweepSpec("http://127.0.0.1/", "closed", spec.concurrencies)
    ceiling = client_ceiling(probe, corpus)
    print(f"client ceiling: {ceiling:.0f} req/s; servers: {', '.join(servers)}", flush=True)
    comparison = compare(
        name, servers, options["engine"], spec, corpus, ceiling, options["results"]
    )
    path = write_report(comparison, options["results"])
    print(f"wrote {path}")


@main.command("report")
@click.option("--name", required=True)
@click.option("--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
def report_command(name: str, results: Path) -> None:
    """Rewrite benchmarks/results/<name>.md from <name>/comparison.json."""
    source = results / name / "comparison.json"
    if not source.is_file():
        raise click.UsageError(f"{source} not found: run `python -m benchmarks compare` first")
    print(f"wrote {write_report(load_comparison(source), results)}")


@main.command("gre-hey")
@click.option(
    "-n", "requests", type=int, default=2000, show_default=True, help="Requests (GRE ran 200000)."
)
@click.option("-c", "concurrency", type=int, default=8, show_default=True)
@click.option(
    "--image",
    type=click.Path(exists=True, path_type=Path),
    help="The JPEG (default ../shared/images/cat.jpg).",
)
@click.option("--engine", default="opencv", show_default=True)
def gre_hey_command(requests: int, concurrency: int, image: Path | None, engine: str) -> None:
    """GRE's published benchmark against gre: CaffeNet, hey -c 8 -n N -m POST -D image.jpg."""
    from benchmarks.gre_hey import gre_hey

    gre_hey(requests, concurrency, image, engine)


if __name__ == "__main__":
    sys.exit(main())
