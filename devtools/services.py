"""Start Mailroom's real backing processes on given ports and wait until they answer.

Used by ``make dev`` (``scripts/dev.py``) and by the test fixtures. Each ``start_*`` function
returns a started :class:`ManagedProcess` that is ready to use: readiness is polled with a
deadline, and a process that exits early or never answers raises :class:`ServiceError` with the
end of its log.

Children run in their own session so that a Ctrl-C in the terminal reaches only the parent,
which then stops them in order. They also die with the parent (Linux): a parent killed outright
(SIGKILL, a closed terminal) leaves no orphans holding the ports, see :func:`_die_with_parent`.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TextIO

from devtools.binaries import (
    INSTALL_HINTS,
    BinaryNotFoundError,
    ServiceError,
    binary_dirs,
    find_binary,
)
from devtools.postgres import (
    FERRETDB_DATABASE,
    POSTGRES_ROLE,
    POSTGRES_SYSTEM_USER,
    create_postgres_database,
    start_postgres,
)
from devtools.processes import ManagedProcess, free_port

__all__ = [
    "FERRETDB_DATABASE",
    "INSTALL_HINTS",
    "POSTGRES_ROLE",
    "POSTGRES_SYSTEM_USER",
    "BinaryNotFoundError",
    "ManagedProcess",
    "ServiceError",
    "binary_dirs",
    "create_postgres_database",
    "find_binary",
    "free_port",
    "start_envoy",
    "start_ferretdb",
    "start_postgres",
    "start_redis",
]

# -- the backing services ----------------------------------------------------------------------


def _redis_ping(host: str, port: int) -> bool:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _mongo_ping(uri: str) -> bool:
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
    )
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


def _envoy_live(admin_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{admin_url}/ready", timeout=0.5) as response:
            return bool(response.status == 200 and response.read().strip() == b"LIVE")
    except (urllib.error.URLError, OSError):
        return False


def start_redis(
    port: int,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    echo: TextIO | None = None,
    ready_timeout: float = 15.0,
) -> ManagedProcess:
    """Start ``redis-server`` on ``host:port`` with its data (append-only file) in ``data_dir``.

    The append-only file makes queued messages survive :meth:`ManagedProcess.restart`.

    Returns:
        The ready process; ``.url`` is ``redis://host:port/0``.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("redis-server"),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    return ManagedProcess(
        "redis",
        argv,
        log_path=log_path or data_dir / "redis.log",
        ready=functools.partial(_redis_ping, host, port),
        ready_timeout=ready_timeout,
        url=f"redis://{host}:{port}/0",
        echo=echo,
    ).start()


#: FerretDB's Go garbage collector target (``GOGC``) unless the caller's environment sets one.
#: Its heap is small (37 MB resident), so with Go's default (100) it collected every few MB
#: allocated, and every command decodes the stored JSON of each document it touches: the
#: collector's marking and allocation were 23 % of its CPU in a profile. With 1000 a find by
#: ``_id`` cost about a third less FerretDB CPU, an update or a turn's insert about a fifth
#: (8 threads, FerretDBs on one PostgreSQL taking turns; docs/benchmarks.md), for 83 MB
#: resident against 37.
FERRETDB_GOGC = "1000"


def start_ferretdb(
    port: int,
    state_dir: Path,
    *,
    postgresql_url: str,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    log_level: str = "error",
    echo: TextIO | None = None,
    ready_timeout: float = 30.0,
) -> ManagedProcess:
    """Start FerretDB on ``host:port`` with its PostgreSQL backend.

    Args:
        port: The MongoDB wire protocol port.
        state_dir: FerretDB's own state (``state.json``); the data is in PostgreSQL.
        postgresql_url: The PostgreSQL database FerretDB stores everything in, e.g. ``.url`` of
            :func:`start_postgres`; each MongoDB database becomes a schema in it.
        host: The address to listen on.
        log_path: Defaults to ``state_dir/ferretdb.log``.
        log_level: FerretDB's ``--log-level``.
        echo: Also copy output lines to this stream.
        ready_timeout: Seconds to wait for a MongoDB ``ping`` to answer.

    Returns:
        The ready process; ``.uri`` is ``mongodb://host:port/`` (no database name). It runs
        with ``GOGC`` set to :data:`FERRETDB_GOGC` unless ``GOGC`` is in the environment.
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("ferretdb"),
        "--handler=postgresql",
        f"--postgresql-url={postgresql_url}",
        f"--listen-addr={host}:{port}",
        f"--state-dir={state_dir}",
        "--telemetry=disable",
        # At WARN it dumps every unsupported command (pymongo's endSessions on each close).
        f"--log-level={log_level}",
        # The debug/metrics listener defaults to a fixed port (8088): two instances would clash.
        "--debug-addr=-",
    ]
    uri = f"mongodb://{host}:{port}/"
    return ManagedProcess(
        "ferretdb",
        argv,
        log_path=log_path or state_dir / "ferretdb.log",
        ready=functools.partial(_mongo_ping, uri),
        ready_timeout=ready_timeout,
        url=uri,
        env={} if "GOGC" in os.environ else {"GOGC": FERRETDB_GOGC},
        echo=echo,
    ).start()


def start_envoy(
    config_path: Path,
    admin_port: int,
    *,
    binary: str | None = None,
    log_path: Path | None = None,
    log_level: str = "warn",
    echo: TextIO | None = None,
    ready_timeout: float = 30.0,
) -> ManagedProcess:
    """Start Envoy with ``config_path``; ready when its admin ``/ready`` answers ``LIVE``.

    Args:
        config_path: The bootstrap config; its admin listener must be on ``admin_port``.
        admin_port: Envoy's admin port on 127.0.0.1.
        binary: The envoy executable; found with :func:`find_binary` when omitted.
        log_path: Defaults to the config path with a ``.log`` suffix.
        log_level: Envoy's ``--log-level``.
        echo: Also copy output lines to this stream.
        ready_timeout: Seconds to wait for ``LIVE``.

    Returns:
        The ready process; ``.url`` is the admin address ``http://127.0.0.1:<admin_port>``.
    """
    config_path = Path(config_path).resolve()
    admin_url = f"http://127.0.0.1:{admin_port}"
    argv = [
        binary or find_binary("envoy"),
        "-c", str(config_path),
        "--log-level", log_level,
        # Hot restart shares memory under a fixed base id: a second Envoy on the host would fail.
        "--disable-hot-restart",
    ]  # fmt: skip
    return ManagedProcess(
        "envoy",
        argv,
        log_path=log_path or config_path.with_suffix(".log"),
        ready=functools.partial(_envoy_live, admin_url),
        ready_timeout=ready_timeout,
        url=admin_url,
        echo=echo,
    ).start()
