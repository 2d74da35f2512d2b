"""Test support: the shared data beside the repo, real photos, and a real gre server.

The data helpers are :mod:`benchmarks.data`'s, failing the test (saying how to get the data)
where those raise :class:`~benchmarks.data.DataMissing`; the server is
:func:`gre.testing.running_gre`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks import data
from benchmarks.data import ROOT, SHARED, DataMissing
from gre.testing import RunningGre, free_port, running_gre, stop

__all__ = [
    "ROOT",
    "SHARED",
    "Server",
    "distinct_jpegs",
    "free_port",
    "package_file",
    "photo_paths",
    "running_server",
    "shared",
    "shared_image",
    "stop",
]


def shared(relative: str) -> Path:
    """A file under ../shared (or $GRE_SHARED); fails the test, saying how to get it, if absent."""
    try:
        return data.shared_path(relative)
    except DataMissing as exc:
        pytest.fail(str(exc))


def shared_image(relative: str, flags: int = cv2.IMREAD_COLOR) -> npt.NDArray[np.uint8]:
    """``cv2.imread`` of the :func:`shared` file ``relative`` (BGR, 8-bit by default); fails
    the test if it is absent or OpenCV cannot read it."""
    path = shared(relative)
    image = cv2.imread(str(path), flags)
    if image is None:
        pytest.fail(f"OpenCV cannot read {path}")
    return np.asarray(image, dtype=np.uint8)


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package (scikit-learn / scikit-image photos);
    fails the test, saying how to get it, if absent."""
    try:
        return data.package_file(package, relative)
    except DataMissing as exc:
        pytest.fail(str(exc))


def photo_paths() -> list[Path]:
    """Real photos: ../shared/images and those scikit-learn and scikit-image ship."""
    try:
        return data.photo_paths()
    except DataMissing as exc:
        pytest.fail(str(exc))


def distinct_jpegs(count: int) -> list[bytes]:
    """``count`` distinct real-photo JPEGs: the photos, then crops and flips of them."""
    try:
        return data.distinct_jpegs(count)
    except DataMissing as exc:
        pytest.fail(str(exc))


@dataclass
class Server(RunningGre):
    """A ``gre serve`` process on 127.0.0.1 (:class:`gre.testing.RunningGre`) and an HTTP
    client for it."""

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client on :attr:`url` with a 60 s timeout; ``kwargs`` go to httpx."""
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]


@contextmanager
def running_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """Start ``python -m gre serve ARGS`` on a free port; wait for /readyz 200 (at most 90 s)
    unless told not to; SIGTERM it afterwards. The server's output goes to a log file under
    ``tmp_path`` the test can read.

    Raises:
        gre.testing.StartError: it exited or was not ready in time (with its log's tail).
    """
    port = free_port()
    log = tmp_path / f"gre-{port}.log"
    with running_gre(
        *args, port=port, log=log, env=env, cwd=ROOT, ready=ready, timeout_s=90.0
    ) as server:
        yield Server(server.process, server.url, server.log)
