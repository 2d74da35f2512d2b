"""Test support: the shared data beside the repo, real photos, and a real gre server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GRE_SHARED", ROOT.parent / "shared"))


def shared(relative: str) -> Path:
    """A file under ../shared (or $GRE_SHARED); fails the test, saying how to get it, if absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.fail(
            f"{path} is missing: gre's tests need the shared data folder beside the repository "
            "(../shared, with images/, data/ilsvrc12/ and models/); set GRE_SHARED to its path"
        )
    return path


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package (scikit-learn / scikit-image photos)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"package {package!r} is missing: run `make test` (it installs .[dev])")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    assert path.is_file(), f"{path} not found in {package}"
    return path


def photo_paths() -> list[Path]:
    """Real photos: ../shared/images and those scikit-learn and scikit-image ship."""
    return [
        shared("images/cat.jpg"),
        shared("images/cat_gray.jpg"),
        shared("images/fish-bike.jpg"),
        package_file("sklearn", "datasets/images/china.jpg"),
        package_file("sklearn", "datasets/images/flower.jpg"),
        package_file("skimage", "data/astronaut.png"),
        package_file("skimage", "data/coffee.png"),
        package_file("skimage", "data/chelsea.png"),
        package_file("skimage", "data/rocket.jpg"),
        package_file("skimage", "data/motorcycle_left.png"),
    ]


def distinct_jpegs(count: int) -> list[bytes]:
    """``count`` distinct real-photo JPEGs: the photos, then crops and flips of them."""
    photos = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photo_paths()]
    images: list[bytes] = []
    variant = 0
    while len(images) < count:
        for photo in photos:
            h, w = photo.shape[:2]
            step = variant % 4
            crop = photo[step * h // 10 : h - step * h // 20, step * w // 12 :]
            if variant // 4 % 2:
                crop = crop[:, ::-1]
            ok, encoded = cv2.imencode(
                ".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 92]
            )
            assert ok
            images.append(encoded.tobytes())
            if len(images) == count:
                break
        variant += 1
    return images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``gre serve`` process on 127.0.0.1 and an HTTP client for it."""

    process: subprocess.Popen[str]
    url: str
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """Start ``python -m gre serve ARGS`` on a free port; wait for /readyz 200 unless told not
    to; SIGTERM it afterwards. The server's output goes to a log file the test can read."""
    port = free_port()
    log = tmp_path / f"gre-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gre", "serve", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        if ready:
            wait_ready(server)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM ``process`` if it still runs (a gre server drains); SIGKILL it after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server, timeout_s: float = 90.0) -> None:
    """Poll /readyz until 200; fails with the server's output if it exits or times out."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if server.process.poll() is not None:
            pytest.fail(f"gre serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"gre serve not ready after {timeout_s} s:\n{server.output()}")
