"""The benchmarks' CPU meter: a process that exits inside the window keeps its tree's count."""

from __future__ import annotations

import subprocess
import sys

from bench.common import CpuMeter

CHILD = """
import sys, time
began = time.process_time()
while time.process_time() - began < 0.3:
    pass
print("burned", flush=True)
sys.stdin.readline()
"""

PARENT = f"""
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", {CHILD!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)
child.stdout.readline()
print("ready", flush=True)
sys.stdin.readline()
child.stdin.write("\\n")
child.stdin.flush()
child.wait()
print("reaped", flush=True)
sys.stdin.readline()
"""


def test_a_child_that_exits_during_the_window_does_not_make_its_tree_negative() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline().strip() == "ready"
        meter = CpuMeter({"tree": parent.pid})
        meter.start()  # the child has burned 0.3 s of CPU by now
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        meter.stop()
        # Counted without the reaped child's share, the tree lost those 0.3 s: about -0.3.
        assert meter.cores["tree"] >= 0
    finally:
        parent.kill()
        parent.wait()
