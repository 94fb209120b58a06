"""``mailroom-worker``: runs the Dramatiq CLI on :mod:`workers.actors` with our settings."""

from __future__ import annotations

import os
import sys
import tempfile

from core.settings import get_settings


def main() -> None:
    """Replace this process with ``dramatiq workers.actors`` (processes and threads from settings).

    Extra command-line arguments are passed to the Dramatiq CLI.
    """
    settings = get_settings()
    if settings.metrics_port:
        os.environ.setdefault("dramatiq_prom_port", str(settings.metrics_port))
        # One metrics database per worker instance: several may run on one host.
        os.environ.setdefault("dramatiq_prom_db", tempfile.mkdtemp(prefix="mailroom-prom-"))
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.actors",
        "--processes",
        str(settings.worker_processes),
        "--threads",
        str(settings.worker_threads),
        *sys.argv[1:],
    ]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
