"""The packaged manifest agrees with the facts it was taken from (../shared's deploy
prototxts and model zoo readme.md files) and with what config/*.toml expects; a bad manifest
is refused with the key at fault."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gre.zoo.errors import ManifestError
from gre.zoo.manifest import Download, Manifest, Member, load_manifest, parse_manifest
from tests.support import ROOT, shared

ZOO = ["bvlc_reference_caffenet", "bvlc_alexnet", "bvlc_googlenet", "squeezenet_v1.0",
       "squeezenet_v1.1"]  # fmt: skip
BVLC = [name for name in ZOO if name.startswith("bvlc_")]
MANIFEST = load_manifest()


def front_matter(readme: Path) -> dict[str, str]:
    """The ``key: value`` lines between the leading ``---`` lines of a Caffe model zoo
    readme.md (the format Caffe's docs/model_zoo.md describes)."""
    lines = readme.read_text().splitlines()
    assert lines[0] == "---", readme
    end = lines.index("---", 1)
    return dict(line.split(": ", 1) for line in lines[1:end])


def downloads(name: str) -> dict[str, Download]:
    return {f: s for f, s in MANIFEST.models[name].files.items() if isinstance(s, Download)}


def test_the_zoo_names_are_all_there() -> None:
    assert set(ZOO) | {"ilsvrc12"} == set(MANIFEST.models)


@pytest.mark.parametrize("name", ZOO)
def test_deploy_checksums_are_those_of_the_shared_copies(name: str) -> None:
    data = shared(f"models/{name}/deploy.prototxt").read_bytes()
    deploy = downloads(name)["deploy.prototxt"]
    assert deploy.sha1 == hashlib.sha1(data).hexdigest()
    assert deploy.size == len(data)


@pytest.mark.parametrize("name", BVLC)
def test_caffemodel_url_and_sha1_are_the_readme_ones(name: str) -> None:
    facts = front_matter(shared(f"models/{name}/readme.md"))
    caffemodel = downloads(name)[facts["caffemodel"]]
    assert caffemodel.url == facts["caffemodel_url"]
    assert caffemodel.sha1 == facts["sha1"]
    assert caffemodel.size is None  # the readme publishes none


@pytest.mark.parametrize("name", ["squeezenet_v1.0", "squeezenet_v1.1"])
def test_squeezenet_comes_from_forresti(name: str) -> None:
    folder = name.replace("squeezenet", "SqueezeNet")
    for filename, spec in downloads(name).items():
        assert spec.url.startswith("https://raw.githubusercontent.com/forresti/SqueezeNet/")
        assert spec.url.endswith(f"/{folder}/{filename}")


def test_synset_words_member_is_the_shared_copy() -> None:
    data = shared("data/ilsvrc12/synset_words.txt").read_bytes()
    member = MANIFEST.archives["caffe_ilsvrc12"].members["synset_words.txt"]
    assert member.sha1 == hashlib.sha1(data).hexdigest()
    assert member.size == len(data)


def zoo_configs() -> list[Path]:
    found = []
    for path in sorted((ROOT / "config").glob("*.toml")):
        if str(tomllib.loads(path.read_text())["model"]["deploy"]).startswith("../models/"):
            found.append(path)
    return found


def config_files(config: dict[str, Any]) -> tuple[str, set[str]]:
    """A zoo config's model name, and the file names it expects under ../models/NAME/."""
    name = config["model"]["name"]
    paths = [
        config["model"][k] for k in ("deploy", "weights", "synset_words") if k in config["model"]
    ]
    mean = config.get("preprocess", {}).get("mean")
    if isinstance(mean, str):
        paths.append(mean)
    prefix = f"../models/{name}/"
    assert all(p.startswith(prefix) for p in paths), (name, paths)
    return name, {p.removeprefix(prefix) for p in paths}


@pytest.mark.parametrize("path", zoo_configs(), ids=lambda p: p.name)
def test_a_name_fetches_exactly_what_its_config_expects(path: Path) -> None:
    """`gre fetch NAME` (--dir models) writes models/NAME/FILE: the paths config/NAME.toml
    names relative to config/ (../models/NAME/FILE)."""
    name, expected = config_files(tomllib.loads(path.read_text()))
    assert path.stem == name
    assert set(MANIFEST.models[name].files) == expected


def test_the_zoo_configs_are_found() -> None:
    assert {p.stem for p in zoo_configs()} >= {"bvlc_googlenet", "bvlc_alexnet"}


def test_every_file_is_verified_by_something() -> None:
    for name, model in MANIFEST.models.items():
        for filename in model.files:
            assert MANIFEST.checks(name, filename).known(), (name, filename)


def test_members_resolve_to_their_archive_entry() -> None:
    spec = MANIFEST.models["bvlc_alexnet"].files["imagenet_mean.binaryproto"]
    assert isinstance(spec, Member)
    assert MANIFEST.checks("bvlc_alexnet", "imagenet_mean.binaryproto").mean_shape == (3, 256, 256)
    assert MANIFEST.archives["caffe_ilsvrc12"].filename == "caffe_ilsvrc12.tar.gz"


def test_an_unknown_name_suggests_the_nearest() -> None:
    with pytest.raises(ManifestError, match="did you mean 'bvlc_googlenet'"):
        MANIFEST.model("bvlc_googlenett")


GOOD: dict[str, Any] = {
    "archives": {"a": {"url": "http://h/a.tar.gz", "members": {"m.txt": {"size": 3}}}},
    "models": {"n": {"files": {"f.bin": {"url": "http://h/f.bin", "sha1": "A" * 40},
                               "m.txt": {"archive": "a"}}}},
}  # fmt: skip


def with_file(spec: dict[str, Any], filename: str = "f.bin", name: str = "n") -> dict[str, Any]:
    return {"archives": GOOD["archives"], "models": {name: {"files": {filename: spec}}}}


def test_a_good_manifest_parses_and_lowers_the_sha1() -> None:
    manifest = parse_manifest(GOOD, "test")
    assert isinstance(manifest, Manifest)
    assert manifest.checks("n", "f.bin").sha1 == "a" * 40
    assert manifest.checks("n", "m.txt").size == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_file({"url": "http://h/f", "sha1": "xyz"}), "models.n.files.f.bin"),
        (with_file({"url": "http://h/f"}), "at least one of sha1, size"),
        (with_file({"url": "ftp://h/f", "size": 1}), "http:// or https://"),
        (with_file({"archive": "nope"}), "names no archive 'nope'"),
        (with_file({"archive": "a", "member": "gone"}), "lists no member 'gone'"),
        (with_file({"url": "http://h/f", "size": 1}, filename="../evil"), "plain file name"),
        (with_file({"url": "http://h/f", "size": 1}, name="a/b"), "plain file name"),
        (with_file({"url": "http://h/f", "size": 1, "colour": "red"}), "colour"),
    ],
)
def test_a_bad_manifest_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match="invalid manifest") as caught:
        parse_manifest(data, "bad.toml")
    assert message in str(caught.value)
    assert "bad.toml" in str(caught.value)


def test_an_unreadable_manifest_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("models = [")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(tmp_path / "absent.toml")
