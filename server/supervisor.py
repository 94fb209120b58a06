"""Several API processes on one port: a small pre-fork supervisor.

One Python process serves SendEmail on one core at most (the GIL). With
``MAILROOM_API_PROCESSES=N`` the ``mailroom-api`` process forks N servers that all bind the same
port with ``SO_REUSEPORT``; the kernel spreads incoming connections among them. This follows
gRPC's own multiprocessing example: nothing gRPC is created before the fork, so each child
builds its own server, MongoDB client and Redis connections.

The supervisor forwards SIGTERM and SIGINT to the servers (each drains its requests) and
replaces a server that died on its own, so one crash does not shrink the pool for good. Servers
that keep dying right after they start (a port held by another program, a bad setting) are not
restarted forever: the supervisor stops and exits 1, so the service manager sees the failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("server.supervisor")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# A server that keeps dying is not replaced faster than this...
RESPAWN_DELAY_SECONDS = 1.0
# ...and not at all when servers die this soon after starting, this many times in a row.
EARLY_EXIT_SECONDS = 10.0
MAX_EARLY_EXITS = 3
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _exit_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when the supervisor dies (Linux), even by SIGKILL.

    Otherwise a killed supervisor would leave its servers holding the port.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the servers outlive a SIGKILLed supervisor
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(processes: int, serve: Callable[[], None]) -> int:
    """Run ``serve`` in ``processes`` forked children until SIGTERM or SIGINT.

    Args:
        processes: How many servers to keep running.
        serve: Runs one server until SIGTERM; called in each child after the fork.

    Returns:
        The exit status for the supervisor: 0 after a requested stop, 1 when the servers kept
        exiting right after they started (a port held by another program, a bad setting).
    """
    stopping = False
    gave_up = False
    children: dict[int, tuple[int, float]] = {}  # pid → (slot, started at)
    early_exits = 0
    supervisor = os.getpid()

    def spawn(slot: int) -> None:
        # Stop signals stay blocked from before the fork until the child has its own handlers
        # and the parent has registered the child: none is lost, none runs the wrong handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the child: a plain server from here on
                status = 1
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                    _exit_with_parent(supervisor)
                    serve()
                    status = 0
                except SystemExit as exc:  # a refusal with its own message (cannot bind…)
                    log.error("API server %d could not run: %s", slot, exc)
                except BaseException:
                    log.exception("API server %d crashed", slot)
                finally:
                    logging.shutdown()
                    os._exit(status)
            children[pid] = (slot, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        log.info("API server %d started (pid %d)", slot, pid)

    def stop_all() -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping %d API servers", signum, len(children))
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(processes):
        if stopping:
            break
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        slot, started = children.pop(pid)
        if stopping:
            continue
        early_exits = early_exits + 1 if time.monotonic() - started < EARLY_EXIT_SECONDS else 0
        code = os.waitstatus_to_exitcode(status)
        if early_exits >= MAX_EARLY_EXITS:
            log.error(
                "API server %d (pid %d) exited with status %d: %d servers in a row died within "
                "%gs of starting; giving up",
                slot,
                pid,
                code,
                early_exits,
                EARLY_EXIT_SECONDS,
            )
            gave_up = True
            stop_all()
            continue
        log.error("API server %d (pid %d) exited with status %d; starting another", slot, pid, code)
        time.sleep(RESPAWN_DELAY_SECONDS)
        if not stopping:
            spawn(slot)
    log.info("all API servers stopped")
    return 1 if gave_up else 0
