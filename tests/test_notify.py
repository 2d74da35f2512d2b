"""systemd's notify protocol against a real unix datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from gre.notify import SystemdNotifier
from tests.support import running_server


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_after_readyz_watchdog_pings_and_stopping(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    with running_server(tmp_path, "--set", f"workers={workers}", env=env, ready=False) as server:
        assert sock.recv(4096) == b"READY=1"
        # READY=1 only once /readyz is 200: checked the moment it arrives.
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
        start = time.monotonic()
        pings = 0
        while time.monotonic() - start < 1.5:
            message = sock.recv(4096)
            assert message == b"WATCHDOG=1"
            pings += 1
        assert pings >= 4
        server.process.send_signal(signal.SIGTERM)
        messages = []
        while b"STOPPING=1" not in messages:
            messages.append(sock.recv(4096))
        assert set(messages) <= {b"WATCHDOG=1", b"STOPPING=1"}
        assert server.process.wait(30) == 0
    sock.close()


def test_no_notify_socket_means_no_watchdog() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "400000"})
    assert notifier.enabled is False
    assert notifier.watchdog_interval_s() is None
    notifier.notify("READY=1")  # a no-op, not an error


def test_notify_socket_and_watchdog_mean_half_the_watchdog_interval() -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "400000"}
    assert (
        SystemdNotifier({**environ, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s() == 0.2
    )
    notifier = SystemdNotifier(environ)
    assert notifier.enabled is True
    assert notifier.watchdog_interval_s() == 0.2


def test_notify_socket_without_watchdog_means_no_pings() -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert notifier.enabled is True
    assert notifier.watchdog_interval_s() is None


def test_a_watchdog_for_another_process_is_not_ours() -> None:
    environ = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "400000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    assert SystemdNotifier(environ).watchdog_interval_s() is None
