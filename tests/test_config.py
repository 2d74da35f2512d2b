import tomllib
from pathlib import Path

import pytest

from gre.config import KEY_SECTIONS, Config, ConfigError, load_config
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
