"""A worker process connects to MongoDB after it boots, not when it imports the actors.

Each case runs in a fresh interpreter: importing :mod:`workers.actors` installs a global broker.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# What the Dramatiq CLI does in a worker process: import the actors' module, then emit
# after_process_boot.
SCRIPT = """
from mongoengine.connection import ConnectionFailure, get_connection


def connected():
    try:
        get_connection()
    except ConnectionFailure:
        return "not connected"
    return "connected"


import workers.actors as actors

print("imported:", connected(), flush=True)
actors.broker.emit_after("process_boot")
print("booted:", connected(), flush=True)
"""


def worker_process(mongodb_uri: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILROOM_")}
    # No metrics server: nothing here may listen or connect.
    env.update(MAILROOM_MONGODB_URI=mongodb_uri, MAILROOM_METRICS_PORT="0")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_the_actors_connects_nothing_and_process_boot_connects():
    # Port 9 (discard): nothing answers, and nothing may try before a message needs the store.
    result = worker_process("mongodb://127.0.0.1:9/mailroom")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["imported: not connected", "booted: connected"]


def test_a_worker_process_that_cannot_set_up_its_connection_stops():
    result = worker_process("mongodb://127.0.0.1:notaport/mailroom")
    assert result.stdout.splitlines() == ["imported: not connected"]
    assert result.returncode == 1
    assert "cannot set up the MongoDB connection" in result.stderr
