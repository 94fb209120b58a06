from collections import Counter

from prometheus_client import REGISTRY

from workers.metrics import record_scan
from workers.rescan import RescanResult


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_scan_is_counted_by_status():
    before = value("mailroom_rescan_requeued_total", job="unit", status="QUEUED")
    result = RescanResult(
        found=Counter({"QUEUED": 3, "SENDING": 1}), requeued=Counter({"QUEUED": 2}), failed=["x"]
    )
    record_scan("unit", result)
    assert value("mailroom_rescan_requeued_total", job="unit", status="QUEUED") == before + 2
    assert value("mailroom_rescan_found_total", job="unit", status="SENDING") >= 1
    assert value("mailroom_rescan_failed_total", job="unit") >= 1
    assert value("mailroom_rescan_runs_total", job="unit", outcome="done") >= 1


def test_a_busy_lock_is_counted_as_such():
    before = value("mailroom_rescan_runs_total", job="unit", outcome="lock_busy")
    record_scan("unit", RescanResult(lock_busy=True))
    assert value("mailroom_rescan_runs_total", job="unit", outcome="lock_busy") == before + 1
