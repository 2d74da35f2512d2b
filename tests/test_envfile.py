"""gre.envfile: shell fragments of assignments, read as /bin/sh reads them.

The Bitfusion AMI's /etc/default/gpurestengine, verbatim, selects its default model through
gre; the reader's rules are checked against /bin/sh itself, case by case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gre.config import AMI_NAMES, load_config
from gre.envfile import EnvFileError, parse_env, read_env_file
from tests.caffe_reference import require_caffe
from tests.support import ROOT, shared

#: The Bitfusion AMI's /etc/default/gpurestengine, as its README gives it: the default model's
#: assignments continued with backslashes, the alternatives commented out (some of those
#: comments end in a backslash too, which continues nothing).
AMI_GPURESTENGINE = """\
# Caffe Model - Default
DEPLOY_PROTEXT="caffe/models/bvlc_reference_caffenet/deploy.prototxt"
CAFFE_MODEL="caffe/models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel" \\
MEAN="caffe/data/ilsvrc12/imagenet_mean.binaryproto" \\
SYNSET_WORDS="caffe/data/ilsvrc12/synset_words.txt"

# Alexnet Model
#DEPLOY_PROTEXT="caffe/models/bvlc_alexnet/deploy.prototxt"
#CAFFE_MODEL="caffe/models/bvlc_alexnet/bvlc_alexnet.caffemodel"
#MEAN="caffe/data/ilsvrc12/imagenet_mean.binaryproto"
#SYNSET_WORDS="caffe/data/ilsvrc12/synset_words.txt"

# Googlenet Model
#DEPLOY_PROTEXT="caffe/models/bvlc_googlenet/deploy.prototxt" \\
#CAFFE_MODEL="caffe/models/bvlc_googlenet/bvlc_googlenet.caffemodel" \\
#MEAN="caffe/data/ilsvrc12/imagenet_mean.binaryproto" \\
#SYNSET_WORDS="caffe/data/ilsvrc12/synset_words.txt"
"""

AMI_DEFAULTS = {
    "DEPLOY_PROTEXT": "caffe/models/bvlc_reference_caffenet/deploy.prototxt",
    "CAFFE_MODEL": "caffe/models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel",
    "MEAN": "caffe/data/ilsvrc12/imagenet_mean.binaryproto",
    "SYNSET_WORDS": "caffe/data/ilsvrc12/synset_words.txt",
}


@pytest.fixture
def ami(tmp_path: Path) -> Path:
    """A working directory laid out as the AMI's file expects, holding that file: CaffeNet's
    deploy and synset words from ../shared, a mean written by pycaffe, and a caffemodel
    stand-in (only the null engine is run, which loads no weights)."""
    caffenet = tmp_path / "caffe/models/bvlc_reference_caffenet"
    ilsvrc12 = tmp_path / "caffe/data/ilsvrc12"
    caffenet.mkdir(parents=True)
    ilsvrc12.mkdir(parents=True)
    shutil.copy(shared("models/bvlc_reference_caffenet/deploy.prototxt"), caffenet)
    shutil.copy(shared("data/ilsvrc12/synset_words.txt"), ilsvrc12)
    (caffenet / "bvlc_reference_caffenet.caffemodel").write_bytes(b"")
    mean = np.load(shared("data/ilsvrc12/ilsvrc_2012_mean.npy"))  # (3, 256, 256)
    blob = require_caffe().io.array_to_blobproto(mean[np.newaxis])
    (ilsvrc12 / "imagenet_mean.binaryproto").write_bytes(blob.SerializeToString())
    (tmp_path / "gpurestengine").write_text(AMI_GPURESTENGINE)
    return tmp_path


def test_the_ami_file_sets_its_four_defaults_only(ami: Path) -> None:
    assert read_env_file(ami / "gpurestengine") == AMI_DEFAULTS
    assert list(read_env_file(ami / "gpurestengine")) == list(AMI_DEFAULTS)  # in file order


def test_the_ami_file_selects_caffenet(ami: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ami)  # its paths are relative: to the working directory, as in sh
    config = load_config(None, {}, env_files=[ami / "gpurestengine"])
    assert config.model.deploy == ami / AMI_DEFAULTS["DEPLOY_PROTEXT"]
    assert config.model.weights == ami / AMI_DEFAULTS["CAFFE_MODEL"]
    assert config.preprocess.mean == ami / AMI_DEFAULTS["MEAN"]
    assert config.model.synset_words == ami / AMI_DEFAULTS["SYNSET_WORDS"]


def clean_environment() -> dict[str, str]:
    """This process's environment without gre's variables, and gre importable from ROOT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRE_") and k not in AMI_NAMES}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_gre_info_describes_the_ami_model(ami: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gre", "info", "--json", "--env-file", "gpurestengine",
         "--set", "engine=null"],
        capture_output=True, text=True, cwd=ami, timeout=120, env=clean_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)["model"]
    assert model["deploy"] == str(ami / AMI_DEFAULTS["DEPLOY_PROTEXT"])
    assert model["input_shape"] == [3, 227, 227]  # CaffeNet's input_dim
    assert model["classes"] == 1000


#: (file text, the variables sh sets). Each is also run through /bin/sh.
SHELL_CASES = [
    ("A=\"two words\"\nB='single $quoted'\n", {"A": "two words", "B": "single $quoted"}),
    ("export A=1 B=2\nexport A\n", {"A": "1", "B": "2"}),
    ("A=x\\\ny\n", {"A": "xy"}),  # backslash-newline vanishes mid-word
    ('A="x \\\ny"\n', {"A": "x y"}),  # ... and inside double quotes
    ("A='x \\\ny'\n", {"A": "x \\\ny"}),  # ... but not inside single quotes
    ("A=1 \\\nB=2\n", {"A": "1", "B": "2"}),  # one command of two assignments
    ("# comment \\\nA=1\n", {"A": "1"}),  # a comment's backslash continues nothing
    ("A=1 # comment \\\nB=2\n", {"A": "1", "B": "2"}),
    ("A=a#b\n", {"A": "a#b"}),  # '#' inside a word is no comment
    ('A="a\\"b\\$c\\d" B=a\\ b\n', {"A": 'a"b$c\\d', "B": "a b"}),
    ("A=\nB=''\nC=cost$\n", {"A": "", "B": "", "C": "cost$"}),
    ("A=1; B=2\nA=3\n", {"A": "3", "B": "2"}),  # the last assignment wins
    ("\n\n  \t\n", {}),
]


@pytest.mark.parametrize(("text", "expected"), SHELL_CASES)
def test_reads_as_sh_does(tmp_path: Path, text: str, expected: dict[str, str]) -> None:
    path = tmp_path / "env"
    path.write_text(text)
    assert read_env_file(path) == expected
    show = "".join(f'printf "%s\\0" "${name}"; ' for name in expected)
    sh = subprocess.run(["/bin/sh", "-c", f". {path}; {show}"], capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr
    assert sh.stdout.split("\0")[:-1] == list(expected.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\necho hello\n", r"line 2: 'echo' is not NAME=value"),
        ("A=1 cmd\n", r"line 1: 'cmd' is not NAME=value"),
        ('"A"=1\n', r"line 1: '\"A\"=1' is not NAME=value"),  # a quoted name assigns nothing
        ("A=1\nB=$HOME/x\n", r"line 2: '\$HOME/x': gre does not expand variables"),
        ('A="${X:-1}"\n', r"line 1: '\$\{X:-1\}': gre does not expand"),
        ("\nA=$(hostname)\n", r"line 2: '\$\(hostname\)'"),
        ("A=`hostname`\n", r"line 1: '`' is shell syntax"),
        ("A=1 | B=2\n", r"line 1: '\|' is shell syntax"),
        ('A=1\nB="open\n\nC=2\n', r"line 2: unterminated double quote"),
        ("A='open\n", r"line 1: unterminated single quote"),
        ('A="open\\', r"line 1: unterminated double quote"),
        ("A=1 \\", r"line 1: backslash at the end of the file"),
        ("A=1 \\\n \\\nB", r"line 3: 'B' is not NAME=value"),
    ],
)
def test_what_is_not_an_assignment_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "env"
    path.write_text(text)
    with pytest.raises(EnvFileError, match=f"^{re.escape(str(path))}, {message}"):
        read_env_file(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_env_file(tmp_path / "absent")
    (tmp_path / "latin1").write_bytes(b"A=1\nB=caf\xe9\n")
    with pytest.raises(EnvFileError, match="latin1, line 2: not UTF-8"):
        read_env_file(tmp_path / "latin1")


def test_crlf_line_ends_read_as_intended() -> None:
    assert parse_env('A=1\r\nB="x"\r\n', Path("f")) == {"A": "1", "B": "x"}
