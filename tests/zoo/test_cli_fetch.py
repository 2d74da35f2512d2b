"""``gre fetch`` on the command line (click's CliRunner), against a real server on 127.0.0.1
through a manifest file (--manifest) pointing at it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import gre.cli
from gre.cli import main
from tests.zoo.fileserver import Files
from tests.zoo.generated import DEPLOY, FILES, WEIGHTS, manifest_data, serve_origin, sha1


def toml_of(data: dict[str, object]) -> str:
    """TOML for a manifest dict (tables of tables; strings, ints and lists as JSON spells them,
    which TOML reads alike)."""
    lines: list[str] = []

    def table(prefix: str, value: dict[str, object]) -> None:
        scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in scalars.items())
        for key, sub in value.items():
            if isinstance(sub, dict):
                table(f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key), sub)

    table("", data)
    return "\n".join(lines) + "\n"


@pytest.fixture
def manifest_file(server: Files, tmp_path: Path) -> Path:
    serve_origin(server)
    path = tmp_path / "manifest.toml"
    path.write_text(toml_of(manifest_data(server.base)))
    assert tomllib.loads(path.read_text()) == manifest_data(server.base)
    return path


def gre_fetch(*args: str) -> Result:
    return CliRunner().invoke(main, ["fetch", *args])


def test_fetch_a_name(manifest_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gre_fetch("tiny", "--dir", str(out), "--manifest", str(manifest_file))
    assert result.exit_code == 0, result.output
    assert f"{out / 'tiny' / 'tiny.caffemodel'}: downloaded, sha1 {sha1(WEIGHTS)}" in result.stdout
    assert f"{out / 'tiny' / 'synset_words.txt'}: extracted" in result.stdout
    for name, data in FILES.items():
        assert (out / "tiny" / name).read_bytes() == data
    again = gre_fetch("tiny", "--dir", str(out), "--manifest", str(manifest_file))
    assert again.stdout.count("present, kept") == 4


def test_the_default_dir_is_models_where_the_configs_look(
    manifest_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "tiny.toml").write_text(
        '[model]\ndeploy = "../models/tiny/deploy.prototxt"\n'
    )
    result = gre_fetch("tiny", "--manifest", str(manifest_file))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "tiny" / "deploy.prototxt").read_bytes() == DEPLOY
    assert "serve it: gre serve --config config/tiny.toml" in result.stdout


def test_a_checksum_failure_exits_1_naming_both_digests(
    server: Files, manifest_file: Path, tmp_path: Path
) -> None:
    server.content["/dl/tiny.caffemodel"] = b"not the weights"
    result = gre_fetch("tiny", "--dir", str(tmp_path / "out"), "--manifest", str(manifest_file))
    assert result.exit_code == 1
    assert result.stderr.startswith("gre: error: ")
    assert f"expected {sha1(WEIGHTS)}, actual {sha1(b'not the weights')}" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "tiny" / "tiny.caffemodel").exists()
    assert not (tmp_path / "out" / "tiny" / "tiny.caffemodel.part").exists()


def test_a_truncated_download_resumes_on_the_next_run(
    server: Files, manifest_file: Path, tmp_path: Path
) -> None:
    server.cut_after = 30_000
    args = ("tiny", "--dir", str(tmp_path / "out"), "--manifest", str(manifest_file))
    result = gre_fetch(*args)
    assert result.exit_code == 1
    assert "run the same command again to resume" in result.stderr
    part = tmp_path / "out" / "tiny" / "tiny.caffemodel.part"
    assert part.stat().st_size == 30_000
    server.cut_after = None
    result = gre_fetch(*args)
    assert result.exit_code == 0, result.output
    assert "bytes=30000-" in server.ranges()
    assert (tmp_path / "out" / "tiny" / "tiny.caffemodel").read_bytes() == WEIGHTS


def test_fetch_a_url_with_sha1(server: Files, tmp_path: Path) -> None:
    server.content["/x/w.caffemodel"] = WEIGHTS
    url = server.url("/x/w.caffemodel")
    result = gre_fetch(url, "--sha1", sha1(WEIGHTS), "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "w.caffemodel").read_bytes() == WEIGHTS
    bad = gre_fetch(url, "--sha1", "6" * 40, "--dir", str(tmp_path / "other"))
    assert bad.exit_code == 1
    assert f"expected {'6' * 40}, actual {sha1(WEIGHTS)}" in bad.stderr


def test_list_names_the_packaged_models() -> None:
    result = gre_fetch("--list")
    assert result.exit_code == 0
    assert "bvlc_googlenet  BVLC GoogLeNet" in result.stdout
    assert "squeezenet_v1.0" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a model NAME or a URL"),
        (("bvlc_googlenet", "--sha1", "0" * 40), "--sha1 goes with a URL"),
        (("http://h/f", "--mirror", "http://m"), "--mirror goes with a NAME"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = gre_fetch(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_unknown_name_exits_1(tmp_path: Path) -> None:
    result = gre_fetch("bvlc_googlenett", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert "gre: error: unknown model 'bvlc_googlenett': did you mean 'bvlc_googlenet'?" in (
        result.stderr
    )


def test_ctrl_c_exits_130_keeping_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gre.cli, "_fetch_target", interrupted)
    result = gre_fetch("bvlc_googlenet", "--dir", str(tmp_path))
    assert result.exit_code == 130
    assert "partial downloads (*.part) are kept" in result.stderr
