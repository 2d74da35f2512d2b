"""The command line, run as a user would: ``python -m gre ...`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, shared


def gre(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gre", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env=env,
    )  # fmt: skip


def test_classify_prints_the_api_json() -> None:
    result = gre("classify", str(shared("images/cat.jpg")), "--top-k", "1")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [a["label"] for a in answer] == ["sfw"]
    assert 0.5 < answer[0]["confidence"] <= 1.0


def test_classify_several_with_a_bad_one(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg at all")
    result = gre("classify", str(shared("images/fish-bike.jpg")), str(junk))
    assert result.returncode == 1
    answers = json.loads(result.stdout)
    assert answers[str(junk)]["error"] == "bad_image"
    assert len(answers[str(shared("images/fish-bike.jpg"))]) == 2


def test_info_reports_model_devices_and_plan() -> None:
    result = gre("info", "--json", "--set", "instances_per_device=2")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["model"]["input_shape"] == [3, 224, 224]
    assert [r["device"] for r in facts["replicas"]] == ["cpu", "cpu"]
    text = gre("info").stdout
    assert "replica 0 on cpu" in text
    assert "NVML" in text


def test_config_errors_exit_2_with_the_key_and_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[model]\ndeploy = "nowhere.prototxt"\n')
    result = gre("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: model.deploy: no such file: {tmp_path / 'nowhere.prototxt'}" in result.stderr
    assert "Traceback" not in result.stderr
    missing = gre("info", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "absent.toml" in missing.stderr


def test_unknown_set_key() -> None:
    result = gre("info", "--set", "batch=3")
    assert result.returncode == 2
    assert "unknown key 'batch'" in result.stderr
