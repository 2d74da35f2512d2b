"""benchmarks.compare end to end with gre alone (null engine, tiny windows): every phase runs
against a real ``gre serve``, the rates come from its saturation, the report is written, and
a server that cannot start is recorded rather than ending the comparison."""

from __future__ import annotations

from pathlib import Path

from benchmarks.compare import CompareSpec, compare, load_comparison
from benchmarks.corpus import load_corpus
from benchmarks.report import write_report
from benchmarks.steady import Settings
from tests.support import shared


def test_compare_gre_alone_writes_the_report(tmp_path: Path) -> None:
    spec = CompareSpec(
        concurrencies=(1, 4), null_concurrencies=(2,),
        settings=Settings(window_s=0.3, warmup_s=0.2, max_windows=3),
    )  # fmt: skip
    corpus = load_corpus(shared("images/cat.jpg"))
    logged: list[str] = []
    made = compare("t", ["gre", "nosuch"], "null", spec, corpus, 30000.0, tmp_path, logged.append)

    assert set(made.runs["gre"]) == {"closed", "open", "null"}
    best = max(s.throughput for s in made.runs["gre"]["closed"].steps)
    assert made.rates == [max(1.0, float(round(f * best))) for f in (0.25, 0.5, 0.75)]
    assert [s.load for s in made.runs["gre"]["open"].steps] == made.rates
    assert [s.load for s in made.runs["gre"]["null"].steps] == [2.0]
    assert set(made.failures["nosuch"]) == {"closed", "open", "null"}
    assert "unknown server 'nosuch'" in made.failures["nosuch"]["closed"]
    assert any("nosuch closed: FAILED" in line for line in logged)

    for phase in ("closed", "open", "null"):
        assert (tmp_path / "t" / f"gre-{phase}" / "steps.csv").is_file()
    saved = load_comparison(tmp_path / "t" / "comparison.json")
    assert saved.rates == made.rates
    assert (
        saved.runs["gre"]["closed"].steps[0].throughput
        == made.runs["gre"]["closed"].steps[0].throughput
    )

    text = write_report(saved, tmp_path).read_text()
    assert "| nosuch | failed: ValueError: unknown server 'nosuch'" in text
    assert "python -m gre serve --port 8000 --engine null --set access_log=false" in text
    assert (tmp_path / "t" / "latency_vs_throughput.png").is_file()
