import logging
import re
import tomllib
from pathlib import Path

import pytest

from gre.config import KEY_SECTIONS, OTHER_GRE_NAMES, Config, ConfigError, load_config
from tests.support import ROOT, shared

NO_ENV: dict[str, str] = {}


def test_shipped_default_config_equals_builtin_defaults() -> None:
    assert load_config(ROOT / "config/open_nsfw.toml", NO_ENV) == load_config(None, NO_ENV)


def test_default_model_files_come_from_the_nsfw_package() -> None:
    config = load_config(None, NO_ENV)
    assert config.model.deploy.name == "deploy.prototxt"
    assert config.model.deploy.parent.name == "nsfw"
    assert config.model.weights.is_file()


@pytest.mark.parametrize(
    "name", ["bvlc_reference_caffenet", "bvlc_alexnet", "bvlc_googlenet", "squeezenet_v1.1"]
)
def test_zoo_configs_expect_files_under_models(name: str) -> None:
    path = ROOT / f"config/{name}.toml"
    raw = tomllib.loads(path.read_text())
    assert raw["model"]["deploy"] == f"../models/{name}/deploy.prototxt"
    with pytest.raises(
        ConfigError, match=rf"{path}: model\.deploy: no such file: .*models/{name}/"
    ):
        load_config(path, NO_ENV)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gre.toml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "words.txt").write_text("a\nb\n")
    path = folder / "gre.toml"
    path.write_text('[model]\nsynset_words = "words.txt"\n')
    config = load_config(path, NO_ENV)
    assert config.model.synset_words == (folder / "words.txt").resolve()
    assert config.model.labels is None  # synset words replace the default inline labels


def test_priority_file_env_ami_cli(tmp_path: Path) -> None:
    words = shared("data/ilsvrc12/synset_words.txt")
    path = write(tmp_path, "[batching]\nmax_batch_size = 8\nmax_queue_size = 10\n")
    env = {"GRE_MAX_BATCH_SIZE": "16", "GRE_DEVICES": "[0, 2]", "SYNSET_WORDS": str(words)}
    config = load_config(path, env, {"max_batch_size": "4"})
    assert config.batching.max_batch_size == 4  # CLI beats environment beats file
    assert config.batching.max_queue_size == 10
    assert config.replicas.devices == [0, 2]
    assert config.model.synset_words == words
    env_only = load_config(path, {"GRE_MAX_BATCH_SIZE": "16"})
    assert env_only.batching.max_batch_size == 16


def test_ami_names_beat_gre_names(tmp_path: Path) -> None:
    words = shared("data/ilsvrc12/synset_words.txt")
    config = load_config(None, {"GRE_SYNSET_WORDS": "/nonexistent", "SYNSET_WORDS": str(words)})
    assert config.model.synset_words == words


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[batching]\nmax_batch_size = 0\n", {}, r"gre\.toml: batching\.max_batch_size: .*greater"),
        ("[batching]\nmax_batch = 4\n", {}, r"gre\.toml: batching\.max_batch: unknown key"),
        ("[bogus]\nx = 1\n", {}, r"unknown section \[bogus\]"),
        ("[model\n", {}, r"gre\.toml"),
        ("", {"GRE_PORT": "http"}, r"environment GRE_PORT: server\.port"),
        (
            "",
            {"CAFFE_MODEL": "/no/such.caffemodel"},
            r"environment CAFFE_MODEL: model\.weights: no such file: /no/such",
        ),
        ('[preprocess]\nmean = "missing.binaryproto"\n', {}, r"preprocess\.mean: no such file"),
        ('[preprocess]\nresize = "big"\n', {}, r"preprocess\.resize"),
    ],
)
def test_errors_name_the_source_and_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.toml", NO_ENV)


def test_flat_keys_are_unique() -> None:
    count = sum(
        len(section.model_fields) for section in (type(v) for v in Config().__dict__.values())
    )
    assert len(KEY_SECTIONS) == count


def env_file(tmp_path: Path, text: str, name: str = "gre.env") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_deploy_protext_is_the_ami_spelling_of_deploy_prototxt() -> None:
    deploy = shared("models/bvlc_reference_caffenet/deploy.prototxt")
    assert load_config(None, {"DEPLOY_PROTEXT": str(deploy)}).model.deploy == deploy
    both = {"DEPLOY_PROTEXT": str(deploy), "DEPLOY_PROTOTXT": str(deploy)}
    assert load_config(None, both).model.deploy == deploy  # the same value twice is no conflict


def test_deploy_names_that_disagree_in_one_source_are_an_error(tmp_path: Path) -> None:
    env = {"DEPLOY_PROTOTXT": "a.prototxt", "DEPLOY_PROTEXT": "b.prototxt"}
    both = r"DEPLOY_PROTOTXT='a.prototxt' and DEPLOY_PROTEXT='b.prototxt' both set model\.deploy"
    with pytest.raises(ConfigError, match=f"environment: {both}"):
        load_config(None, env)
    path = env_file(tmp_path, "DEPLOY_PROTOTXT=a.prototxt\nDEPLOY_PROTEXT=b.prototxt\n")
    with pytest.raises(ConfigError, match=f"env file {path}: {both}"):
        load_config(None, NO_ENV, env_files=[path])


def test_the_environment_wins_over_env_files_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    deploy = shared("models/bvlc_reference_caffenet/deploy.prototxt")
    first = env_file(tmp_path, "GRE_PORT=9000\nGRE_MAX_BATCH_SIZE=7\nGRE_BACKLOG=5\n", "first")
    second = env_file(tmp_path, "GRE_BACKLOG=6\nDEPLOY_PROTEXT=nowhere.prototxt\n", "second")
    environ = {"GRE_PORT": "8001", "DEPLOY_PROTOTXT": str(deploy)}
    config = load_config(None, environ, env_files=[first, second])
    assert config.server.port == 8001  # GRE_PORT=8001 gre serve --env-file first
    assert config.batching.max_batch_size == 7
    assert config.server.backlog == 6  # a later file wins over an earlier one
    assert config.model.deploy == deploy  # the file's other spelling is the same key, beneath
    gre_name = load_config(None, {"GRE_DEPLOY": str(deploy)}, env_files=[second])
    assert gre_name.model.deploy == deploy  # a key, whatever its name, set above wins
    missing = f"env file {second} DEPLOY_PROTEXT: model.deploy: no such file: {tmp_path}/nowhere"
    with pytest.raises(ConfigError, match=re.escape(missing)):
        load_config(None, NO_ENV, env_files=[first, second])


def test_env_file_values_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "words.txt").write_text("a\nb\n")
    (tmp_path / "etc").mkdir()
    path = env_file(tmp_path / "etc", "SYNSET_WORDS=words.txt\n")  # not etc/words.txt
    monkeypatch.chdir(tmp_path)
    assert load_config(None, NO_ENV, env_files=[path]).model.synset_words == tmp_path / "words.txt"


def test_gre_config_in_an_env_file_names_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[batching]\nmax_batch_size = 3\n")
    path = env_file(tmp_path, "GRE_CONFIG=gre.toml\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(None, NO_ENV, env_files=[path]).batching.max_batch_size == 3
    # The environment's own GRE_CONFIG is the CLI's --config; it hides the file's.
    default = load_config(None, {"GRE_CONFIG": "other.toml"}, env_files=[path])
    assert default.batching.max_batch_size == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nrm -rf /\n", r"env file {path}, line 2: 'rm' is not NAME=value"),
        ("GRE_PORT=$PORT\n", r"env file {path}, line 1: '\$PORT': gre does not expand"),
        ("GRE_PORT=http\n", r"env file {path} GRE_PORT: server\.port"),
    ],
)
def test_env_file_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = env_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message.format(path=path)):
        load_config(None, NO_ENV, env_files=[path])
    with pytest.raises(ConfigError, match=f"env file {tmp_path / 'absent'}: No such file"):
        load_config(None, NO_ENV, env_files=[tmp_path / "absent"])


def test_unknown_gre_names_warn_with_the_nearest_known_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = env_file(tmp_path, "GRE_DEVICE=all\nGRE_CACHE_DIR=/var/cache/gre\n")
    environ = {"GRE_MAX_BATCH": "4", "GRE_XYZZY": "1", "GRE_PORT": "8001"}
    with caplog.at_level(logging.WARNING, logger="gre.config"):
        config = load_config(None, environ, env_files=[path])
    assert config.batching.max_batch_size == 32  # ignored, not guessed
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("gre.config", "WARNING", f"unknown setting GRE_DEVICE in env file {path}, ignored: "
         "did you mean GRE_DEVICES?"),
        ("gre.config", "WARNING", "unknown setting GRE_MAX_BATCH in the environment, ignored: "
         "did you mean GRE_MAX_BATCH_SIZE?"),
        ("gre.config", "WARNING", "unknown setting GRE_XYZZY in the environment, ignored"),
    ]  # fmt: skip


def test_no_warning_for_the_gre_names_the_project_uses(caplog: pytest.LogCaptureFixture) -> None:
    """Every GRE_* name in the Makefile, scripts/, gre/ and benchmarks/ (bar Python constants
    there) is a config key or in OTHER_GRE_NAMES, so none of them warns."""
    files = [ROOT / "Makefile", *(ROOT / "scripts").glob("*")]
    files += [*(ROOT / "gre").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    used: set[str] = set()
    constants: set[str] = set()
    for file in files:
        text = file.read_text(errors="replace")
        used |= set(re.findall(r"\bGRE_[A-Z0-9][A-Z0-9_]*\b", text))
        if file.suffix == ".py":
            constants |= set(re.findall(r"^(GRE_[A-Z0-9_]+)\s*[:=]", text, re.MULTILINE))
    names = used - constants
    assert {"GRE_CONFIG", "GRE_CAFFE_PYTHONPATH", "GRE_CACHE_DIR", "GRE_PEER_RUN"} <= names
    keys = {f"GRE_{key.upper()}" for key in KEY_SECTIONS}
    assert names - keys <= OTHER_GRE_NAMES, "add these to gre.config.OTHER_GRE_NAMES"
    with caplog.at_level(logging.WARNING, logger="gre.config"):
        load_config(None, dict.fromkeys(OTHER_GRE_NAMES, "x"))
    assert not caplog.records, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"admin_clients": '["10.0.0.0/8", "localhost"]'}, "'localhost' is not an IP"),
        (
            {"max_body_bytes": "2048", "max_inflight_body_bytes": "1024"},
            "max_body_bytes (2048) exceeds max_inflight_body_bytes (1024)",
        ),
    ],
)
def test_server_settings_that_cannot_work_are_refused(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, {}, overrides)


def test_a_deploy_of_its_own_names_the_model_after_its_folder(tmp_path: Path) -> None:
    deploy = tmp_path / "bvlc_googlenet" / "deploy.prototxt"
    deploy.parent.mkdir()
    deploy.write_text('name: "GoogleNet"\n')
    environ = {"DEPLOY_PROTOTXT": str(deploy)}
    assert load_config(None, environ, {"engine": "null"}).model.name == "bvlc_googlenet"
    named = load_config(None, environ, {"engine": "null", "name": "mine"})
    assert named.model.name == "mine"  # an explicit name wins, whatever its source
    assert load_config(None, {}, {}).model.name == "open_nsfw"
