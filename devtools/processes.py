"""Running a backing process: finding its binary, starting it, waiting until it answers.

A :class:`ManagedProcess` is started and polled for readiness with a deadline; a process that
exits early or never answers raises :class:`ServiceError` with the end of its log.

Children run in their own session so that a Ctrl-C in the terminal reaches only the parent,
which then stops them in order. They also die with the parent (Linux): a parent killed outright
(SIGKILL, a closed terminal) leaves no orphans holding the ports, see :func:`_die_with_parent`.
The services themselves are started by :mod:`devtools.services` and :mod:`devtools.postgres`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TextIO, TypedDict

from devtools.binaries import ServiceError

_echo_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (for tests, bench, make dev)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def as_user(user: str | None) -> _UserArgs:
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
            **as_user(self._user),
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
