"""The command line, run as a user would: ``python -m gre ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gre.cli import config_loader
from gre.config import ConfigError
from tests.support import ROOT, running_server, shared


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
    assert [r["engine"] for r in facts["replicas"]] == ["opencv", "opencv"]  # auto, no GPU
    assert facts["model"]["precision"] == "fp32"
    assert facts["http_workers"] == 1  # workers = 0: CPU replicas leave no core
    assert json.loads(gre("info", "--json", "--set", "workers=3").stdout)["http_workers"] == 3
    text = gre("info").stdout
    assert "replica 0 on cpu" in text
    assert "opencv engine, fp32, decoded by opencv" in text
    assert "NVML" in text
    device_decode = gre("info", "--json", "--set", "engine=torch", "--set", "decode=gpu")
    assert json.loads(device_decode.stdout)["replicas"][0]["decoder"] == "torchvision-cpu"


def test_gpu_decode_with_an_engine_that_cannot_exits_2_before_any_replica_starts() -> None:
    result = gre("serve", "--set", "decode=gpu", "--port", "1")  # auto: opencv on the CPU
    assert result.returncode == 2
    assert 'preprocess.decode = "gpu" needs the torch engine' in result.stderr
    assert "failed to start" not in result.stderr  # refused in the front end


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


def test_env_files_missing_bad_and_beneath_the_environment(tmp_path: Path) -> None:
    optional = gre("info", "--json", f"--env-file=-{tmp_path / 'absent'}", "--set", "engine=null")
    assert optional.returncode == 0, optional.stderr  # "-": as systemd's EnvironmentFile=-
    required = gre("info", "--env-file", str(tmp_path / "absent"))
    assert required.returncode == 2
    assert f"gre: error: env file {tmp_path / 'absent'}: No such file" in required.stderr
    bad = tmp_path / "bad"
    bad.write_text("GRE_PORT=8001\nexec gre\n")
    result = gre("serve", "--env-file", str(bad))
    assert result.returncode == 2
    assert f"gre: error: env file {bad}, line 2: 'exec' is not NAME=value" in result.stderr
    assert "Traceback" not in result.stderr
    good = tmp_path / "good"
    good.write_text("GRE_INSTANCES_PER_DEVICE=3 \\\n  GRE_ENGINE=null\n")
    env = {**os.environ, "GRE_INSTANCES_PER_DEVICE": "2"}
    facts = json.loads(gre("info", "--json", "--env-file", str(good), env=env).stdout)
    assert facts["model"]["engine"] == "null"
    assert len(facts["replicas"]) == 2  # the environment wins over the file


def test_unknown_gre_variables_warn(tmp_path: Path) -> None:
    env = {**os.environ, "GRE_MAX_BATCH": "4"}
    result = gre("info", "--set", "engine=null", env=env)
    assert result.returncode == 0, result.stderr
    assert "unknown setting GRE_MAX_BATCH in the environment" in result.stderr
    assert "did you mean GRE_MAX_BATCH_SIZE?" in result.stderr


def test_config_loader_reads_everything_afresh_and_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("GRE_")]:
        monkeypatch.delenv(name)
    first, later = tmp_path / "first", tmp_path / "later"
    first.write_text("GRE_MAX_BATCH_SIZE=8\n")
    load = config_loader(None, ["max_queue_size=9"], [str(first), f"-{later}"], engine="null")
    config = load()
    assert (config.batching.max_batch_size, config.batching.max_queue_size) == (8, 9)
    assert config.model.engine == "null"
    later.write_text("GRE_MAX_BATCH_SIZE=16\n")  # a "-" file that has appeared is read now
    assert load().batching.max_batch_size == 16
    first.write_text("GRE_MAX_BATCH_SIZE=$N\n")
    with pytest.raises(ConfigError, match=rf"env file {first}, line 1: '\$N'"):
        load()
    with pytest.raises(ConfigError, match="--set 'oops': expected KEY=VALUE"):
        config_loader(None, ["oops"], [])()


def test_sighup_rereads_the_env_files(tmp_path: Path) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    first.write_text("GRE_NAME=first\n")
    with running_server(tmp_path, "--env-file", str(first), f"--env-file=-{later}") as server:
        assert httpx.get(f"{server.url}/api/model").json()["name"] == "first"
        later.write_text("GRE_NAME=later\n")
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/api/model").json()["name"] != "later":
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
