"""Each peer's virtual environment, kept out of gre's: its framework pinned, built once, cached.

The naive peer is Starlette + Uvicorn, which gre's own ``.venv`` already has at the versions gre
runs, so it uses that. BentoML, Ray Serve and Triton each get a venv built from
``benchmarks/peers/<name>/requirements.txt`` in ``${GRE_CACHE_DIR:-~/.cache/gre}/peers/
<name>-<key>``, key = the first 16 hex digits of the SHA-256 of the requirement lines (comments
and blank lines left out) and the Python version, so a changed pin builds a new venv beside the
old one. gre itself is not
installed there: the servers run with the repository on ``PYTHONPATH``, so they run the tree's
gre, not a stale copy.

Two peer-specific twists, both data here and in the peer's folder:

- Its interpreter (:data:`INTERPRETERS`): the venv is made from this Python unless the peer
  names another. Triton's is Debian's ``/usr/bin/python3.11``: the Python backend stub that
  ``nvidia-pytriton`` ships links Debian's ``libpython3.11``, and from another build of 3.11
  the model fails to load.
- Its pipeline's own packages (``pipeline-requirements.txt``, optional): installed without
  dependencies into ``<venv>/pipeline-site``, which the launcher puts first on the server's
  ``PYTHONPATH``. For a framework whose own pins exclude gre's numpy and OpenCV
  (``nvidia-pytriton`` declares numpy<2, and its stub aborts on numpy 2), the framework keeps
  what pip resolved for it in ``site-packages`` while the pipeline runs gre's versions.

A venv is built in place under a lock and counts as built only once ``gre-peer.json`` (written
last: install time, Python, key) exists; an interrupted build is removed and redone. (Built
elsewhere and renamed, a venv's console scripts and ``activate`` would name the old path.)

Only the standard library here: this module is imported inside the peers' venvs too.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(__file__).resolve().parent
GRE_VENV = ROOT / ".venv"
#: The peers, in the order reports list them.
PEER_NAMES: tuple[str, ...] = ("naive", "bentoml", "rayserve", "triton")
#: Distributions :func:`peer_versions` reports, where the venv has them.
REPORTED = (
    "bentoml",
    "ray",
    "nvidia-pytriton",
    "starlette",
    "uvicorn",
    "fastapi",
    "numpy",
    "opencv-python-headless",
    "protobuf",
    "pydantic",
)
MARKER = "gre-peer.json"
#: Peers whose venv is made from a given interpreter, not this one; and how to get it.
INTERPRETERS: dict[str, tuple[Path, str]] = {
    "triton": (Path("/usr/bin/python3.11"), "apt-get install python3.11 python3.11-venv"),
}
#: A peer's optional pipeline packages (see the module's docstring), and where they go.
PIPELINE_REQUIREMENTS = "pipeline-requirements.txt"
PIPELINE_SITE = "pipeline-site"


class PeerSetupError(RuntimeError):
    """A peer's venv could not be built; the message has pip's output."""


def check_name(name: str) -> None:
    """Raises ValueError for a name not in :data:`PEER_NAMES`."""
    if name not in PEER_NAMES:
        raise ValueError(f"unknown peer {name!r}: one of {', '.join(PEER_NAMES)}")


def cache_dir() -> Path:
    """Where the peers' venvs live: ``${GRE_CACHE_DIR:-~/.cache/gre}/peers``."""
    return Path(os.environ.get("GRE_CACHE_DIR", Path.home() / ".cache" / "gre")) / "peers"


def requirements_file(name: str) -> Path | None:
    """The peer's pinned requirements; ``None`` for a peer that runs in gre's ``.venv``."""
    check_name(name)
    path = PEERS_DIR / name / "requirements.txt"
    return path if path.is_file() else None


def pipeline_requirements_file(name: str) -> Path | None:
    """The peer's pipeline packages for ``<venv>/pipeline-site``; ``None`` for most peers."""
    check_name(name)
    path = PEERS_DIR / name / PIPELINE_REQUIREMENTS
    return path if path.is_file() else None


def base_python(name: str) -> Path:
    """The interpreter the peer's venv is made from: :data:`INTERPRETERS`' or this one."""
    fixed = INTERPRETERS.get(name)
    return fixed[0] if fixed else Path(sys.executable)


@functools.cache
def _python_tag(python: Path) -> str:
    """``"<implementation> <version>"`` of ``python`` (``"missing"`` when it does not run)."""
    if python == Path(sys.executable):
        return f"{platform.python_implementation()} {platform.python_version()}"
    script = "import platform; print(platform.python_implementation(), platform.python_version())"
    try:
        done = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    except OSError:
        return "missing"
    return done.stdout.strip() if done.returncode == 0 else "missing"


def _lines(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def venv_dir(name: str) -> Path:
    """The peer's venv (built or not): gre's ``.venv`` for naive, else the cached one."""
    requirements = requirements_file(name)
    if requirements is None:
        return GRE_VENV
    digest = hashlib.sha256("\n".join(_lines(requirements)).encode())
    python = base_python(name)
    digest.update(_python_tag(python).encode())
    if name in INTERPRETERS:  # another build of the same version is another venv
        digest.update(str(python).encode())
    if pipeline := pipeline_requirements_file(name):
        digest.update("\n".join(["pipeline", *_lines(pipeline)]).encode())
    return cache_dir() / f"{name}-{digest.hexdigest()[:16]}"


def pipeline_path(name: str) -> list[str]:
    """What goes first on the peer server's ``PYTHONPATH``: ``[<venv>/pipeline-site]`` for a
    peer with pipeline packages of its own, else ``[]``."""
    if pipeline_requirements_file(name) is None:
        return []
    return [str(venv_dir(name) / PIPELINE_SITE)]


def venv_python(name: str) -> Path:
    """The peer venv's interpreter (the venv may not be built yet)."""
    return venv_dir(name) / "bin" / "python"


def is_built(name: str) -> bool:
    """Whether the peer's venv is complete (gre's ``.venv`` counts when it has a Python)."""
    path = venv_dir(name)
    if requirements_file(name) is None:
        return (path / "bin" / "python").exists()
    return (path / MARKER).is_file()


def ensure_venv(name: str, *, quiet: bool = False) -> Path:
    """The peer's venv directory, built first when missing (minutes: pip installs the
    framework; another process building the same venv is waited for, not duplicated).

    Raises:
        ValueError: unknown peer name.
        PeerSetupError: gre's ``.venv`` is missing (naive), the peer's interpreter is missing
            (:data:`INTERPRETERS`), or venv creation or pip failed.
    """
    path = venv_dir(name)
    requirements = requirements_file(name)
    if requirements is None:
        if not is_built(name):
            raise PeerSetupError(f"{path} is missing: run `make setup` (the naive peer uses it)")
        return path
    if is_built(name):
        return path
    if name in INTERPRETERS and _python_tag(base_python(name)) == "missing":
        python, install = INTERPRETERS[name]
        raise PeerSetupError(
            f"peer {name}: its venv must be made from {python}, which is missing: `{install}`"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_built(name):
            _build(name, path, requirements, quiet)
    return path


def _build(name: str, path: Path, requirements: Path, quiet: bool) -> None:
    shutil.rmtree(path, ignore_errors=True)  # what an interrupted build left

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    say(f"peer {name}: building {path} from {requirements.relative_to(ROOT)} (minutes)")
    start = time.monotonic()
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    steps = [[str(base_python(name)), "-m", "venv", str(path)], [*pip, "-r", str(requirements)]]
    if pipeline := pipeline_requirements_file(name):
        steps.append(
            [*pip, "--no-deps", "--target", str(path / PIPELINE_SITE), "-r", str(pipeline)]
        )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise PeerSetupError(
                f"peer {name}: `{' '.join(step)}` exited {done.returncode}:\n"
                f"{done.stdout[-4000:]}{done.stderr[-8000:]}"
            )
    seconds = time.monotonic() - start
    record = {
        "peer": name,
        "requirements": str(requirements.relative_to(ROOT)),
        "python": _python_tag(base_python(name)).split()[-1],
        "install_seconds": round(seconds, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (path / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    say(f"peer {name}: built in {seconds:.0f} s")


def build_record(name: str) -> dict[str, object]:
    """What :func:`ensure_venv` recorded when it built the venv (``{}`` for gre's ``.venv``),
    plus ``size_bytes``: the venv's size on disk now."""
    path = venv_dir(name)
    marker = path / MARKER
    record: dict[str, object] = json.loads(marker.read_text()) if marker.is_file() else {}
    record["size_bytes"] = sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()
    )
    return record


def peer_versions(name: str) -> dict[str, str]:
    """``{distribution: version}`` of the framework and key packages in the peer's venv
    (those of :data:`REPORTED` it has), plus ``python``; builds the venv first if missing.
    With pipeline packages of its own (``<venv>/pipeline-site``) those are the versions the
    pipeline runs, and ``"<distribution> (framework)"`` the framework's own where it differs.

    Raises:
        ValueError, PeerSetupError: as :func:`ensure_venv`.
    """
    python = ensure_venv(name, quiet=True) / "bin" / "python"
    script = (
        "import importlib.metadata as m, json, platform, sys\n"
        "out = {'python': platform.python_version()}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )

    def query(pythonpath: list[str]) -> dict[str, str]:
        inherited = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [*pythonpath, inherited]))}
        done = subprocess.run(
            [str(python), "-c", script, *REPORTED],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        found: dict[str, str] = json.loads(done.stdout)
        return found

    versions = query(pipeline_path(name))
    if pipeline_path(name):
        framework = query([])
        for dist, version in framework.items():
            if versions.get(dist) != version:
                versions[f"{dist} (framework)"] = version
    return versions
