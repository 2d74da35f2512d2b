"""Fixtures for the zoo's tests: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.zoo.fileserver import Files, serving


@pytest.fixture
def server() -> Iterator[Files]:
    with serving() as files:
        yield files
