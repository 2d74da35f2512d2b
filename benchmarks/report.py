"""The comparison report: ``<results>/<name>.md`` with tables, ratios, plots, commands,
machine and versions, written from a :class:`~benchmarks.compare.Comparison`.

Ratios are always gre ÷ the other server: above 1 is better for throughput, below 1 is
better for latency. The target (issue 6) is gre >= 1.3x each peer's saturation throughput
and a lower p99 at every fixed rate; the report lists every place gre misses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.compare import Comparison, saturation
from benchmarks.plots import batch_size_vs_load, latency_vs_throughput
from benchmarks.progress import load_label
from benchmarks.results import StepResult

#: gre's throughput over each peer's at saturation that the issue asks for.
TARGET_THROUGHPUT_RATIO = 1.3
#: The multiplication sign (U+00D7) of ratios such as 1.42x.
X = "\u00d7"
GRE = "gre"


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table; ``n/a`` for missing or NaN."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, ``None`` when either is missing, NaN or zero."""
    if numerator is None or denominator is None:
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return None
    return numerator / denominator


def value(step: StepResult | None, key: str) -> float | None:
    """``step.<key>`` (a float field), or ``None`` without a step."""
    if step is None:
        return None
    figure = getattr(step, key)
    return None if figure is None else float(figure)


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}{X}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table, numbers right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def step_at(steps: Sequence[StepResult], load: float) -> StepResult | None:
    return next((s for s in steps if math.isclose(s.load, load)), None)


def errors_text(step: StepResult | None) -> str:
    if step is None or not step.errors:
        return "0"
    return ", ".join(f"{status}: {count}" for status, count in step.errors.items())


#: The analysis of a comparison, written by whoever ran it, beside its data.
ANALYSIS_FILE = "analysis.md"
TRITON = "triton"
#: What a reader must know beside a peer's figures (the report's "About the peers" section).
PEER_NOTES: dict[str, str] = {
    TRITON: (
        "`triton` is NVIDIA Triton (the `tritonserver` that nvidia-pytriton bundles, on the "
        "CPU) with gre's pipeline as its PyTriton Python model, one instance, behind Triton's "
        "dynamic batcher (`max_batch_size` 32, `max_queue_delay_microseconds` 0, as gre's "
        "defaults). Triton speaks KServe v2, not gre's API, so the load reaches it through a "
        "thin Starlette + Uvicorn front in the same process that checks each image as gre does "
        "and forwards it to Triton's HTTP endpoint (benchmarks/peers/triton/server.py). Its "
        "figures include that extra local round trip, which a client speaking KServe v2 to "
        "Triton would not pay: where gre is behind Triton here, it is behind Triton alone by at "
        "least as much; where gre is ahead, by less than shown."
    ),
}


class Report:
    """Builds the report's sections from a comparison (``directory``: where its plots go)."""

    def __init__(self, comparison: Comparison, directory: Path) -> None:
        self.c = comparison
        self.directory = directory
        self.peers = [s for s in comparison.servers if s != GRE]

    def steps(self, server: str, phase: str) -> list[StepResult]:
        run = self.c.run(server, phase)
        return run.steps if run else []

    def saturation(self, server: str, phase: str = "closed") -> StepResult | None:
        return saturation(self.steps(server, phase))

    def missing(self, server: str, phase: str) -> str:
        why = self.c.failures.get(server, {}).get(phase)
        return f"failed: {why}" if why else "not run"

    # sections

    def summary(self) -> list[str]:
        rates = self.c.rates
        header = [
            "peer",
            "throughput gre ÷ peer",
            *(f"p99 at {r:g} req/s gre ÷ peer" for r in rates),
            "target met",
        ]
        rows = []
        gre_sat = self.saturation(GRE)
        for peer in self.peers:
            peer_sat = self.saturation(peer)
            tput = ratio(value(gre_sat, "throughput"), value(peer_sat, "throughput"))
            p99s = [self.rate_ratio(peer, rate, "p99_ms") for rate in rates]
            met = (
                tput is not None
                and tput >= TARGET_THROUGHPUT_RATIO
                and all(r is not None and r < 1 for r in p99s)
            )
            rows.append([peer, fmt_ratio(tput), *map(fmt_ratio, p99s), "yes" if met else "**no**"])
        if not rows:
            rows.append(["no peer in this comparison", *[""] * (len(header) - 1)])
        return [
            "## Summary",
            "",
            f"Target (not a test): gre ≥ {TARGET_THROUGHPUT_RATIO}{X} each peer's saturation "
            "throughput, and a lower p99 than each peer at every fixed rate. Ratios are gre ÷ "
            "peer: above 1 is better for throughput, below 1 is better for latency.",
            "",
            *table(header, rows),
        ]

    def rate_ratio(self, peer: str, rate: float, key: str) -> float | None:
        gre_step = step_at(self.steps(GRE, "open"), rate)
        peer_step = step_at(self.steps(peer, "open"), rate)
        return ratio(value(gre_step, key), value(peer_step, key))

    def saturation_section(self) -> list[str]:
        gre_sat = self.saturation(GRE)
        rows = []
        for server in self.c.servers:
            step = self.saturation(server)
            if step is None:
                rows.append([server, self.missing(server, "closed"), "", "", "", "", "", ""])
                continue
            rows.append(
                [
                    server,
                    fmt(step.throughput),
                    f"{step.load:g}",
                    fmt(step.p50_ms, 2),
                    fmt(step.p99_ms, 2),
                    fmt(step.mean_batch_size),
                    errors_text(step),
                    "—"
                    if server == GRE
                    else fmt_ratio(ratio(value(gre_sat, "throughput"), step.throughput)),
                ]
            )
        return [
            f"## Saturation throughput (closed loop, engine `{self.c.engine}`)",
            "",
            "The best step of the concurrency sweep "
            f"({', '.join(str(c) for c in self.c.settings.get('concurrencies', []))}).",
            "",
            *table(
                [
                    "server",
                    "req/s",
                    "at concurrency",
                    "p50 ms",
                    "p99 ms",
                    "mean batch",
                    "errors",
                    "gre ÷ server",
                ],
                rows,
            ),
        ]

    def rates_section(self) -> list[str]:
        rates = self.c.rates
        header = ["server"] + [
            f"{r:g} req/s: {k}" for r in rates for k in ("achieved", "p50 ms", "p99 ms")
        ]
        rows = []
        for server in self.c.servers:
            steps = self.steps(server, "open")
            if not steps:
                rows.append([server, self.missing(server, "open")] + [""] * (3 * len(rates) - 1))
                continue
            row = [server]
            for rate in rates:
                step = step_at(steps, rate)
                row += [
                    fmt(value(step, "throughput")),
                    fmt(value(step, "p50_ms"), 2),
                    fmt(value(step, "p99_ms"), 2),
                ]
            rows.append(row)
        ratio_rows = [
            [peer]
            + [fmt_ratio(self.rate_ratio(peer, r, k)) for r in rates for k in ("p50_ms", "p99_ms")]
            for peer in self.peers
        ]
        arrivals = self.c.settings.get("arrivals", "poisson")
        return [
            "## Latency at fixed request rates (open loop)",
            "",
            f"{arrivals.capitalize()} arrivals at {', '.join(f'{r:g}' for r in rates)} req/s, "
            "the same "
            "for every server (25/50/75 % of the lowest saturation throughput unless given). "
            "Latency runs from each request's scheduled arrival, so a server that falls behind "
            "pays for its queue.",
            "",
            *table(header, rows),
            "",
            "gre ÷ peer:",
            "",
            *table(
                ["peer"] + [f"{r:g} req/s {k[:3]}" for r in rates for k in ("p50_ms", "p99_ms")],
                ratio_rows,
            ),
        ]

    def overhead_section(self) -> list[str]:
        gre_sat = self.saturation(GRE, "null")
        gre_one = self.first(GRE)
        rows = []
        for server in self.c.servers:
            sat, one = self.saturation(server, "null"), self.first(server)
            if sat is None:
                rows.append([server, self.missing(server, "null"), "", "", "", ""])
                continue
            rows.append(
                [
                    server,
                    fmt(sat.throughput),
                    fmt(value(one, "p50_ms"), 2),
                    fmt(value(one, "p99_ms"), 2),
                    "—"
                    if server == GRE
                    else fmt_ratio(ratio(value(gre_sat, "throughput"), sat.throughput)),
                    "—"
                    if server == GRE
                    else fmt_ratio(ratio(value(gre_one, "p50_ms"), value(one, "p50_ms"))),
                ]
            )
        concurrencies = ", ".join(str(c) for c in self.c.settings.get("null_concurrencies", []))
        return [
            "## Service overhead (engine `null`: fixed probabilities, no forward)",
            "",
            f"Closed loop at {concurrencies}. What is left is HTTP, queueing, batching, decode and "
            "preprocessing: the cost of the service itself.",
            "",
            *table(
                [
                    "server",
                    "saturation req/s",
                    "p50 ms at lowest c",
                    "p99 ms at lowest c",
                    "req/s gre ÷ server",
                    "p50 gre ÷ server",
                ],
                rows,
            ),
        ]

    def first(self, server: str) -> StepResult | None:
        steps = self.steps(server, "null")
        return min(steps, key=lambda s: s.load, default=None)

    def losses(self) -> list[str]:
        """Every place gre misses the target or does worse than a peer."""
        found = []
        gre_sat = self.saturation(GRE)
        for peer in self.peers:
            peer_sat = self.saturation(peer)
            tput = ratio(value(gre_sat, "throughput"), value(peer_sat, "throughput"))
            if tput is not None and tput < TARGET_THROUGHPUT_RATIO:
                found.append(
                    f"- Saturation throughput vs {peer}: {tput:.2f}{X} (target "
                    f"{TARGET_THROUGHPUT_RATIO}{X}): gre "
                    f"{fmt(value(gre_sat, 'throughput'))} req/s, "
                    f"{peer} {fmt(value(peer_sat, 'throughput'))} req/s."
                )
            for rate in self.c.rates:
                p99 = self.rate_ratio(peer, rate, "p99_ms")
                if p99 is not None and p99 >= 1:
                    found.append(
                        f"- p99 at {rate:g} req/s vs {peer}: gre's is {p99:.2f}{X} {peer}'s."
                    )
            null = ratio(
                value(self.saturation(GRE, "null"), "throughput"),
                value(self.saturation(peer, "null"), "throughput"),
            )
            if null is not None and null < 1:
                found.append(f"- Null-engine saturation vs {peer}: {null:.2f}{X} (more overhead).")
        return found

    def losses_section(self) -> list[str]:
        found = self.losses()
        lines = ["## Where gre loses", ""]
        if not self.peers:
            return [*lines, "No peer in this comparison."]
        if not found:
            return [*lines, "Nowhere in these figures: gre meets the target against every peer."]
        return [
            *lines,
            *found,
            *self.behind_triton(found),
            "",
            "Why: see [Analysis](#analysis).",
        ]

    def behind_triton(self, found: Sequence[str]) -> list[str]:
        """Where gre is behind Triton, what these figures say of why: the batches each formed
        at saturation and each service's own cost (the null engine). Only figures measured in
        this comparison; nothing when gre is not behind Triton."""
        if TRITON not in self.peers or not any(f" vs {TRITON}:" in line for line in found):
            return []
        gre_sat, tri_sat = self.saturation(GRE), self.saturation(TRITON)
        lines = ["", f"Against {TRITON}, from these figures:", ""]
        gre_batch, tri_batch = value(gre_sat, "mean_batch_size"), value(tri_sat, "mean_batch_size")
        if gre_sat and tri_sat and gre_batch is not None and tri_batch is not None:
            more = "larger" if tri_batch > gre_batch else "no larger"
            lines.append(
                f"- Batching: at their best steps Triton's batcher formed {more} batches than "
                f"gre's scheduler: mean {fmt(tri_batch)} images per forward at concurrency "
                f"{tri_sat.load:g}, gre {fmt(gre_batch)} at {gre_sat.load:g}."
            )
        gre_null = value(self.saturation(GRE, "null"), "throughput")
        tri_null = value(self.saturation(TRITON, "null"), "throughput")
        if gre_null is not None and tri_null is not None:
            lower = "Triton's" if tri_null > gre_null else "gre's"
            lines.append(
                f"- Overhead: {lower} own cost per request is the lower (null engine: gre "
                f"{fmt(gre_null)} req/s, Triton {fmt(tri_null)} req/s at saturation), with the "
                "front's round trip counted in Triton's."
            )
        if len(lines) == 3:
            lines.append("- Neither batch sizes nor null-engine figures were measured for both.")
        return lines

    def notes_section(self) -> list[str]:
        notes = [f"- {PEER_NOTES[peer]}" for peer in self.peers if peer in PEER_NOTES]
        return ["## About the peers", "", *notes] if notes else []

    def analysis_section(self) -> list[str]:
        """The human reading of the figures, kept in ``<name>/analysis.md`` so that
        ``python -m benchmarks report`` can rewrite the report without losing it."""
        path = self.directory / ANALYSIS_FILE
        if path.is_file():
            return ["## Analysis", "", path.read_text().strip()]
        return [
            "## Analysis",
            "",
            f"_None yet: write it in `{self.c.name}/{ANALYSIS_FILE}` and rerun "
            f"`python -m benchmarks report --name {self.c.name}`._",
        ]

    def timings_section(self) -> list[str]:
        names = sorted(
            {n for s in self.c.servers if (t := self.saturation(s)) for n in t.server_ms}
        )
        rows = []
        for server in self.c.servers:
            step = self.saturation(server)
            if step is not None:
                rows.append(
                    [
                        server,
                        f"{step.load:g}",
                        *(fmt(step.server_ms.get(n), 2) for n in names),
                        fmt(step.mean_batch_size),
                        fmt(step.client_cpu_cores, 2),
                    ]
                )
        return [
            "## Inside the servers at saturation",
            "",
            "Mean Server-Timing durations (ms) where a server sends them, mean batch size where it "
            "reports one (gre: `GET /api/model` `batches_by_size`), and the load client's CPU "
            "(cores) in the same step.",
            "",
            *table(
                [
                    "server",
                    "concurrency",
                    *(f"{n} ms" for n in names),
                    "mean batch",
                    "client CPU cores",
                ],
                rows,
            ),
        ]

    def client_section(self) -> list[str]:
        ceiling = self.c.ceiling
        limited = [
            f"{server} {phase} {load_label(step.mode, step.load)}"
            for server in self.c.servers
            for phase in ("closed", "open", "null")
            for step in self.steps(server, phase)
            if step.client_limited
        ]
        unstable = [
            f"{server} {phase} {load_label(step.mode, step.load)}"
            for server in self.c.servers
            for phase in ("closed", "open", "null")
            for step in self.steps(server, phase)
            if not step.stable
        ]
        return [
            "## The load client",
            "",
            f"Built-in asyncio + httptools client on uvloop. Its ceiling against a trivial "
            f"endpoint on this machine: **{fmt(ceiling)} req/s**; steps above half of it, or "
            "with an open-loop scheduler lagging, are flagged client-limited: "
            + (", ".join(limited) if limited else "none")
            + ".",
            "",
            "Steady state: windows of "
            f"{self.c.settings.get('window_s')} s, accepted when "
            f"{self.c.settings.get('stable_windows')} "
            f"consecutive ones agree within {100 * self.c.settings.get('tolerance', 0.1):g} % on "
            f"throughput and mean latency, at most {self.c.settings.get('max_windows')} windows. "
            "Steps that never settled: " + (", ".join(unstable) if unstable else "none") + ".",
        ]

    def plots_section(self) -> list[str]:
        name = self.c.name
        runs = {s: self.steps(s, "closed") for s in self.c.servers if self.steps(s, "closed")}
        lines = ["## Plots", ""]
        if runs:
            latency_vs_throughput(
                runs,
                self.directory / "latency_vs_throughput.png",
                f"closed loop, engine {self.c.engine}",
            )
            lines.append(f"![latency vs throughput]({name}/latency_vs_throughput.png)")
            if batch_size_vs_load(runs, self.directory / "batch_size_vs_load.png"):
                lines.append(f"![batch size vs load]({name}/batch_size_vs_load.png)")
        opened = {s: self.steps(s, "open") for s in self.c.servers if self.steps(s, "open")}
        if opened:
            latency_vs_throughput(
                opened, self.directory / "latency_at_rates.png", "open loop at the fixed rates"
            )
            lines.append(f"![latency at fixed rates]({name}/latency_at_rates.png)")
        nulls = {s: self.steps(s, "null") for s in self.c.servers if self.steps(s, "null")}
        if nulls:
            latency_vs_throughput(
                nulls,
                self.directory / "null_latency_vs_throughput.png",
                "null engine (service overhead)",
            )
            lines.append(f"![null engine]({name}/null_latency_vs_throughput.png)")
        peers_without = [s for s in runs if all(st.mean_batch_size is None for st in runs[s])]
        if peers_without:
            lines += ["", f"Batch size: n/a for {', '.join(peers_without)} (not reported)."]
        return lines

    def setup_section(self) -> list[str]:
        m = self.c.machine
        lines = [
            "## How it was run",
            "",
            f"- Command: `{self.c.command}` (started {self.c.started_at})",
            f"- Corpus: {self.c.corpus}",
        ]
        for server in self.c.servers:
            lines.append(f"- {server}: `{self.c.server_commands.get(server, '?')}`")
        lines += [
            f"- Machine: {m.get('cpu')}, {m.get('cores')} logical cores, "
            f"{m.get('memory_gib')} GiB, "
            f"{m.get('os')}, kernel {m.get('kernel')}, Python {m.get('python')}, GPUs: "
            f"{', '.join(m.get('gpus') or []) or 'none'}",
            "- Harness: " + ", ".join(f"{k} {v}" for k, v in self.c.harness_versions.items()),
        ]
        for server, versions in self.c.server_versions.items():
            lines.append(
                f"- {server}: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "n/a")
            )
        lines.append(
            f"- Raw data: `{self.c.name}/<server>-<closed|open|null>/` (steps.csv, run.json)"
        )
        return lines

    def render(self) -> str:
        sections = [
            [
                f"# gre vs peers: {self.c.name}",
                "",
                f"Servers: {', '.join(self.c.servers)}; engine `{self.c.engine}`; one server at a "
                "time on the same machine, the same corpus and load.",
            ],
            self.summary(),
            self.notes_section(),
            self.saturation_section(),
            self.rates_section(),
            self.overhead_section(),
            self.losses_section(),
            self.analysis_section(),
            self.timings_section(),
            self.plots_section(),
            self.client_section(),
            self.setup_section(),
        ]
        return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_report(comparison: Comparison, results: Path) -> Path:
    """Write ``<results>/<name>.md`` (and its plots under ``<results>/<name>/``)."""
    directory = results / comparison.name
    directory.mkdir(parents=True, exist_ok=True)
    path = results / f"{comparison.name}.md"
    path.write_text(Report(comparison, directory).render())
    return path
