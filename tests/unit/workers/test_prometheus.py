"""The worker's Prometheus middleware: a delayed message is counted in, then out, under one label.

Dramatiq's own middleware counts a delayed message in under ``<queue>.DQ`` and out under
``<queue>`` (the copy put back on the queue at its eta): the gauge read -1 in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, prometheus
from dramatiq.middleware.prometheus import Prometheus

from helpers import wait_until
from workers.prometheus import MailroomPrometheus


def delayed_gauge(middleware: Prometheus) -> dict[str, float]:
    """The gauge's values in this process, by queue label."""
    [metric] = middleware.inprogress_delayed_messages.collect()
    return {s.labels["queue_name"]: s.value for s in metric.samples}


@pytest.fixture
def run_delayed(monkeypatch, tmp_path) -> Iterator:
    """Run one delayed message, and one retried with a delay, through a real Dramatiq worker."""
    # The middleware's process boot points prometheus_client at its directory (and keeps one
    # file per process and metric, whatever the directory): a directory of this test's own, and
    # the environment restored afterwards. Each test uses a queue name of its own.
    monkeypatch.setattr(prometheus, "DB_PATH", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    workers = []

    def run(middleware: Prometheus, queue: str) -> Callable[[], dict[str, float]]:
        broker = StubBroker(middleware=[Retries(), middleware])
        broker.emit_after("process_boot")  # what Dramatiq's CLI does in a worker process
        calls = []

        @dramatiq.actor(broker=broker, queue_name=queue, max_retries=1, min_backoff=10)
        def deliver(n: int) -> None:
            calls.append(n)
            if n == 2 and calls.count(2) == 1:
                raise dramatiq.Retry("again", delay=20)

        worker = dramatiq.Worker(broker, worker_timeout=50)
        workers.append(worker)
        worker.start()
        deliver.send_with_options(args=(1,), delay=20)
        deliver.send(2)
        wait_until(lambda: sorted(calls) == [1, 2, 2], timeout=10, message="all three runs")
        worker.join()
        return lambda: delayed_gauge(middleware)

    yield run
    for worker in workers:
        worker.stop()


def test_dramatiqs_own_middleware_reads_minus_one(run_delayed):
    """The bug, kept as a test: if Dramatiq fixes it, MailroomPrometheus can go."""
    values = run_delayed(Prometheus(), "theirs")
    wait_until(
        lambda: values() == {"theirs": -2, "theirs.DQ": 2},
        timeout=10,
        message="Dramatiq's -2 and +2",
    )


def test_delayed_messages_are_counted_out_under_the_label_they_were_counted_in(run_delayed):
    values = run_delayed(MailroomPrometheus(), "mail")
    # The delay queue's copies are acknowledged just after their put-back: wait for that.
    wait_until(lambda: values() == {"mail.DQ": 0}, timeout=10, message="the gauge back at 0")
