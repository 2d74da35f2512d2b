"""Logging: JSON lines on stderr, one per request (``gre.access``) plus gre's own events."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def _drop_color_message(record: logging.LogRecord) -> bool:
    # Uvicorn attaches an ANSI-coloured copy of its messages; JSON lines want one message.
    record.__dict__.pop("color_message", None)
    return True


def configure_logging(level: str) -> None:
    """Send every log record to stderr as one JSON object per line at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_drop_color_message)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
