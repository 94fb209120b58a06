"""Several API processes on one port: a small pre-fork supervisor.

One Python process serves SendEmail on one core at most (the GIL). With
``MAILROOM_API_PROCESSES=N`` the ``mailroom-api`` process forks N servers that all bind the same
port with ``SO_REUSEPORT``; the kernel spreads incoming connections among them. This follows
gRPC's own multiprocessing example: nothing gRPC is created before the fork, so each child
builds its own server, MongoDB client and Redis connections.

The supervisor forwards SIGTERM and SIGINT to the servers (each drains its requests) and
replaces a server that died on its own, so one crash does not shrink the pool for good.
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

# A server that keeps dying is not replaced faster than this.
RESPAWN_DELAY_SECONDS = 1.0
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
        The exit status for the supervisor: 0 after a requested stop.
    """
    stopping = False
    children: dict[int, int] = {}  # pid → slot
    supervisor = os.getpid()

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: a plain server from here on
            status = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _exit_with_parent(supervisor)
                serve()
                status = 0
            except BaseException:
                log.exception("API server %d crashed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        children[pid] = slot
        log.info("API server %d started (pid %d)", slot, pid)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("signal %d: stopping %d API servers", signum, len(children))
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(processes):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid, -1)
        if slot < 0:
            continue
        if stopping:
            continue
        log.error(
            "API server %d (pid %d) exited with status %d; starting another",
            slot,
            pid,
            os.waitstatus_to_exitcode(status),
        )
        time.sleep(RESPAWN_DELAY_SECONDS)
        if not stopping:
            spawn(slot)
    log.info("all API servers stopped")
    return 0
