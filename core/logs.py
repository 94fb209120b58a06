"""Logging set-up shared by the entry points."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log to stderr with timestamps, process and thread, at ``level``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d:%(threadName)s] %(name)s: %(message)s",
    )
