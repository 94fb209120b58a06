"""``make dev`` (scripts/dev.py): its children die with it, and it starts again at once.

The whole of ``make dev`` runs here, on free ports and with its state in a temporary directory:
PostgreSQL, FerretDB, Redis, the SMTP sink, the API, Envoy, a worker and the scheduler.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.services import BinaryNotFoundError, find_binary
from helpers import free_port, postgres_traversable_dir, wait_until

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import dev  # noqa: E402  (scripts/dev.py)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` (pid → start time, which tells a reused pid apart)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    found: dict[int, int] = {}
    parents = {root}
    while parents:
        children = {pid for pid, (_, ppid, _) in stats.items() if ppid in parents}
        children -= found.keys()
        found.update({pid: stats[pid][2] for pid in children})
        parents = children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _alive(processes: dict[int, int]) -> list[int]:
    """The processes of ``processes`` still running (a zombie waiting for its reaper is not)."""
    alive = []
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            alive.append(pid)
    return alive


@pytest.fixture
def var_dir() -> Iterator[Path]:
    """make dev's state directory; traversable by the ``postgres`` user when we are root."""
    with postgres_traversable_dir("mailroom-dev-", "var") as var:
        yield var


class Dev:
    """One run of scripts/dev.py on the given ports, its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "dev.py"), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"make dev exited ({self.proc.returncode}):\n{self.output()}")
            return "dev      | ready:" in self.output()

        wait_until(ready, timeout=timeout, interval=0.2, message="make dev is ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_die_with_a_killed_make_dev_and_it_starts_again(var_dir, tmp_path):
    for name in ("postgres", "initdb", "ferretdb", "redis-server", "envoy", "mailroom-api"):
        try:
            find_binary(name)
        except BinaryNotFoundError as exc:
            pytest.fail(str(exc), pytrace=False)
    ports = {
        name: free_port()
        for name in ("http", "admin", "mongo", "postgres", "redis", "smtp", "grpc", "metrics")
    }
    argv = [
        "--var", str(var_dir),
        "--http-port", str(ports["http"]),
        "--admin-port", str(ports["admin"]),
        "--mongo-port", str(ports["mongo"]),
        "--postgres-port", str(ports["postgres"]),
        "--redis-port", str(ports["redis"]),
        "--smtp-port", str(ports["smtp"]),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "dramatiq_prom"))}
    env |= {
        "MAILROOM_GRPC_PORT": str(ports["grpc"]),
        "MAILROOM_METRICS_PORT": str(ports["metrics"]),
        "MAILROOM_SCHEDULER_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    first = Dev(argv, env, tmp_path / "first.log")
    second: Dev | None = None
    children: dict[int, int] = {}
    try:
        first.wait_ready()
        children = _descendants(first.proc.pid)
        # PostgreSQL (and its own processes), FerretDB, Redis, sink, API, Envoy, worker, scheduler.
        assert len(children) >= 8, first.output()

        first.proc.kill()
        first.proc.wait()
        try:
            wait_until(
                lambda: not _alive(children),
                timeout=60,
                interval=0.2,
                message="every child of the killed make dev has exited",
            )
        except AssertionError as exc:
            left = {pid: _cmdline(pid) for pid in _alive(children)}
            raise AssertionError(f"{exc}; still running: {left}\n{first.output()}") from None

        # At once: no orphan holds a port, and TIME_WAIT connections do not count as taken.
        second = Dev(argv, env, tmp_path / "second.log")
        second.wait_ready()
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=5):
            pass
        # The REST reference too: the rendered config finds envoy/docs from var/.
        url = f"http://127.0.0.1:{ports['http']}/docs"
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b'id="swagger-ui"' in page.read()
    finally:
        for run in (first, second):
            if run is not None:
                run.stop()
        for pid in _alive(children):  # a failed test leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
    assert second.proc.returncode == 0, second.output()


def test_a_port_left_in_time_wait_is_free():
    """A stopped server's connections in TIME_WAIT do not stop the next one from listening."""
    with socket.socket() as server:
        # As Redis, PostgreSQL, Envoy… bind theirs; a TIME_WAIT socket keeps the flag.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert not dev._port_free(port)  # listening: taken
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the check did: "already in use"
    assert dev._port_free(port)
