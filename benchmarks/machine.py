"""What a benchmark ran on: CPU model, cores, memory, OS, GPUs, and software versions."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Python distributions whose versions a gre run reports.
GRE_PACKAGES = (
    "gre", "starlette", "uvicorn", "uvloop", "httptools", "opencv-python-headless", "numpy",
)  # fmt: skip
#: The harness's own.
HARNESS_PACKAGES = ("httptools", "uvloop", "matplotlib", "rich", "click")


def _first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line
    except OSError:
        return None
    return None


def gpus() -> list[str]:
    """GPU names NVML finds, e.g. ``["NVIDIA H100 80GB HBM3"]`` (empty without one)."""
    try:
        from gre.replicas.gpus import discover_gpus
    except ImportError:
        return []
    found, _ = discover_gpus()
    return [gpu.name for gpu in found]


def machine() -> dict[str, Any]:
    """CPU model, logical cores, memory (GiB), OS, kernel, Python, GPUs."""
    mem_kb = _first("/proc/meminfo", "MemTotal")
    os_name = _first("/etc/os-release", "PRETTY_NAME=")
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "os": os_name.split("=", 1)[1].strip('"') if os_name else platform.platform(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "gpus": gpus(),
    }


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of Python distributions (``"not installed"`` where absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def debian_version(package: str) -> str:
    """``dpkg-query``'s version of a Debian package (``"not installed"`` where absent)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


def command_line() -> str:
    """How this process was started, to be pasted into a shell."""
    return shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
