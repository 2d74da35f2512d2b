"""``engine = "auto"`` and the torch build's CUDA, read without importing torch: what the
front end decides before any replica starts, and what ``gre info`` says of each GPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gre.config import ReplicasConfig
from gre.info import compatibility
from gre.model.engines import engine_has_gpu, resolve_engine_name
from gre.model.engines.choice import TorchBuild, runtime_fits_driver, torch_build
from gre.replicas import plan
from gre.replicas.gpus import GpuInfo
from gre.replicas.plan import PlanError, discover_and_plan
from tests.model.test_engine_torch import require_torch

H200 = GpuInfo(0, "NVIDIA H200", "GPU-0", 141 << 30, 140 << 30, "580.65.06", "13.0")
OLD = GpuInfo(1, "Tesla T4", "GPU-1", 16 << 30, 15 << 30, "535.183.01", "12.2")


def test_auto_is_torch_on_a_gpu_and_opencv_on_the_cpu() -> None:
    assert resolve_engine_name("auto", gpu=True) == "torch"
    assert resolve_engine_name("auto", gpu=False) == "opencv"
    assert resolve_engine_name("auto") == "opencv"
    assert resolve_engine_name("caffe", gpu=True) == "caffe"  # a name given is kept


def test_the_torch_build_is_read_as_torch_itself_reports_it() -> None:
    torch = require_torch()
    build = torch_build()
    assert build == TorchBuild(torch.__version__, torch.version.cuda)
    assert engine_has_gpu("torch") is (torch.version.cuda is not None)


def test_the_front_end_never_imports_torch_to_decide() -> None:
    script = textwrap.dedent(
        """
        import sys
        from gre.model.engines import engine_has_gpu
        from gre.model.engines.choice import torch_build
        engine_has_gpu("torch"); torch_build()
        print("torch" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("runtime", "driver", "fits"),
    [("13.0", "13.0", True), ("12.8", "13.0", True), ("12.8", "12.2", True),
     ("13.0", "12.8", False), ("12.1", "11.8", False)],
)  # fmt: skip
def test_a_cuda_runtime_needs_a_driver_of_its_major_version(
    runtime: str, driver: str, fits: bool
) -> None:
    assert runtime_fits_driver(runtime, driver) is fits


def with_gpus(monkeypatch: pytest.MonkeyPatch, gpus: list[GpuInfo]) -> None:
    """NVML, as the planner asks it, reports ``gpus`` (a stand-in for the driver)."""
    monkeypatch.setattr(plan, "discover_gpus", lambda: (gpus, None if gpus else "no driver"))


def test_auto_plans_torch_on_every_gpu_when_torch_has_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_gpus(monkeypatch, [H200])
    monkeypatch.setattr(plan, "engine_has_gpu", lambda engine: engine == "torch")
    placement = discover_and_plan(ReplicasConfig(devices="all"), "auto")
    assert placement.engine == "torch"
    assert [str(p.device) for p in placement.plans] == ["gpu:0"]


def test_auto_on_gpus_with_a_cpu_only_torch_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_gpus(monkeypatch, [H200])
    monkeypatch.setattr(plan, "engine_has_gpu", lambda engine: False)
    with pytest.raises(PlanError, match=r"no GPU support.*scripts/install-torch\.sh"):
        discover_and_plan(ReplicasConfig(devices="all"), "auto")


def test_auto_without_gpus_serves_opencv_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    with_gpus(monkeypatch, [])
    placement = discover_and_plan(ReplicasConfig(devices="all"), "auto")
    assert placement.engine == "opencv"
    assert [str(p.device) for p in placement.plans] == ["cpu"]
    assert placement.nvml_problem == "no driver"


def test_info_says_whether_the_torch_build_fits_each_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gre import info

    monkeypatch.setattr(info, "torch_build", lambda: TorchBuild("2.13.0", "13.0"))
    assert compatibility(H200, "torch") == (
        "driver 580.65.06 runs CUDA <= 13.0; torch 2.13.0 needs CUDA 13.0: ok"
    )
    assert compatibility(OLD, "torch").endswith(
        "needs CUDA 13.0: too old a driver: scripts/install-torch.sh picks a torch for it"
    )
    monkeypatch.setattr(info, "torch_build", lambda: TorchBuild("2.13.0+cpu", None))
    assert "CPU-only" in compatibility(H200, "torch")
    monkeypatch.setattr(info, "torch_build", lambda: None)
    assert "not installed" in compatibility(H200, "torch")
    assert "CPU only" in compatibility(H200, "opencv")
