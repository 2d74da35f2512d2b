"""Which engine ``engine = "auto"`` runs, and what the installed torch build can use, read
without importing torch (the front end never loads an engine).

On a GPU: the torch engine, gre's only engine with a GPU path in a pip installation (the
opencv-python wheels have no CUDA; pycaffe is built CPU-only). On the CPU: opencv, the
faster engine on 6 of the 8 zoo nets at batch 1 and 8 (docs/fidelity.md, "Which engine
auto picks"): the torch engine is at 0.53-0.89x opencv on GoogLeNet, SqueezeNet,
MobileNet v2 and open_nsfw, and ahead only on CaffeNet at batch 8 (1.29x) and MobileNet v1
(1.07-1.33x), where ``engine = "torch"`` is one setting away.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

#: ``torch/version.py``'s ``__version__`` and ``cuda`` lines.
_VERSION = re.compile(r"^__version__\s*=\s*'([^']+)'", re.M)
_CUDA = re.compile(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']+)'|None)", re.M)


@dataclass(frozen=True)
class TorchBuild:
    """The installed torch: ``version`` (e.g. ``"2.13.0+cpu"``) and the CUDA runtime it was
    built for (``"13.0"``; ``None``: a CPU-only build)."""

    version: str
    cuda: str | None


def torch_build() -> TorchBuild | None:
    """The installed torch's build, read from ``torch/version.py`` (what ``torch.version``
    holds) without importing torch (1-2 s and ~300 MB); ``None`` when torch is absent or the
    file is not as expected."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    version, cuda = _VERSION.search(text), _CUDA.search(text)
    if version is None or cuda is None:
        return None
    return TorchBuild(version.group(1), cuda.group(1))


def auto_engine(gpu: bool) -> str:
    """``engine = "auto"``: ``"torch"`` when the replicas run on GPUs, else ``"opencv"``."""
    return "torch" if gpu else "opencv"


def runtime_fits_driver(runtime: str, driver_cuda: str) -> bool:
    """Whether a CUDA runtime ``runtime`` (``"12.8"``) runs on a driver supporting up to
    ``driver_cuda`` (``"13.0"``): a runtime needs a driver of at least its major version
    (CUDA's minor-version compatibility within a major release), i.e. 12.x runs on any 12.x+
    driver, 13.x needs a 13.x driver (>= 580)."""
    major = int(runtime.split(".")[0])
    return int(driver_cuda.split(".")[0]) >= major


def decode_problem(decode: str, engine: str) -> str | None:
    """Why ``preprocess.decode`` cannot run with the resolved ``engine`` in this installation
    (checked in the front end, before any replica starts), or ``None``: ``"gpu"`` needs the
    torch engine and torchvision (its nvJPEG decode)."""
    if decode != "gpu":
        return None
    if engine != "torch":
        return (
            f'preprocess.decode = "gpu" needs the torch engine, and the replicas would run '
            f'{engine} (engine = "auto" picks opencv on the CPU): set engine = "torch" or '
            'decode = "cpu"'
        )
    if importlib.util.find_spec("torchvision") is None:
        return (
            'preprocess.decode = "gpu" needs torchvision (nvJPEG), which is not installed: '
            "`make setup` installs the build that matches torch (scripts/install-torch.sh)"
        )
    return None
