"""systemd's notify protocol: READY=1, STOPPING=1 and watchdog pings (``Type=notify``).

Uses the ``sdnotify`` package; every call is a no-op when ``NOTIFY_SOCKET`` is unset (not
run by systemd).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import sdnotify


class SystemdNotifier:
    """Tells systemd when gre is ready, when it stops, and that its event loop is alive."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET`` and the watchdog's variables from ``environ`` (default
        ``os.environ``; tests pass their own, so that they do not depend on whether systemd
        runs them). The socket sdnotify sends to is still the one ``os.environ`` names."""
        self._environ = os.environ if environ is None else environ
        self.enabled = bool(self._environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None

    def notify(self, state: str) -> None:
        """Send ``state`` (e.g. ``"READY=1"``) if systemd listens."""
        if self._notifier is not None:
            self._notifier.notify(state)

    def watchdog_interval_s(self) -> float | None:
        """Half of ``WatchdogSec=`` (from ``WATCHDOG_USEC``), as sd_watchdog_enabled(3)
        advises; ``None`` when the watchdog is off or meant for another process."""
        usec = self._environ.get("WATCHDOG_USEC")
        pid = self._environ.get("WATCHDOG_PID")
        if not self.enabled or not usec or (pid and int(pid) != os.getpid()):
            return None
        return int(usec) / 2e6

    async def watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the event loop until cancelled: a wedged loop stops the
        pings and systemd restarts the service."""
        interval = self.watchdog_interval_s()
        if interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
