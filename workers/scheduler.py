"""``mailroom-scheduler``: periodiq's scheduler plus a small Dramatiq worker for its jobs.

Periodic jobs (crons from ``settings.rescan``):

* ``mailroom_rescan`` (default every 30 minutes): enqueue again every email that is not final and
  has not moved for ``buffer_seconds`` (see :mod:`workers.rescan`).
* ``mailroom_rescan_due`` (every minute): enqueue SCHEDULED emails whose ``send_at`` has passed, so
  a scheduled email goes out within a minute even when its delayed message was lost (Redis was
  down when it was accepted, or the worker holding the delayed message died: Dramatiq brings such
  a message back only after the dead worker's heartbeat times out, and not reliably soon after);
  and QUEUED or RETRYING emails untouched for ``quick_buffer_seconds`` (an API that died before
  it could enqueue, a worker that died mid-send and whose message is gone): recovery in a minute
  or two, where the full rescan is the half-hourly backstop.
* ``mailroom_purge`` (hourly): delete expired idempotency keys and old email turns.
* ``mailroom_webhooks_sweep`` (every minute, ``settings.webhooks.sweep_cron``): enqueue again the
  pending webhook deliveries overdue by ``sweep_grace_seconds`` (Redis lost their messages).
* ``mailroom_retention`` (hourly): purge the bodies, attachment contents and headers of final
  emails older than ``retention_days`` (see :mod:`workers.retention`).

periodiq only *sends* a message per job at each cron tick; a Dramatiq worker must run it. This
process runs that worker itself, on a queue of its own (``mailroom.maintenance``), so the jobs
never wait behind a backlog of deliveries (periodiq silently skips a job message older than its
``skip_delay``) and ``mailroom-worker`` needs nothing of the scheduler. Several schedulers may run:
each sends its ticks, and a Redis lock (:mod:`workers.locks`) lets one scan run at a time; per-email
marks in Redis (when a scan last enqueued the email) keep a second scan right after the first from
enqueueing the same emails again.

The scheduling loop is periodiq's own :class:`periodiq.Scheduler` (what the ``periodiq`` command
runs), driven here rather than through the CLI so the process also starts the worker and stops
both cleanly on SIGTERM.

``mailroom-scheduler --once [rescan|due|purge|retention|webhooks]`` runs one job now, prints its
result as one JSON line on stdout and exits: for operators and tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import dramatiq
import pendulum
import periodiq
import redis
from dramatiq.brokers.redis import RedisBroker

from core.errors import MailroomError, QueueUnavailable
from core.events_out import webhook_queue
from core.logs import configure_logging
from core.queue import DeliveryQueue
from core.redis_errors import map_redis_errors
from core.settings import Settings, get_settings
from core.store import idempotency, turns
from core.store.connection import connect, ensure_indexes_in_background
from core.store.documents import Status, utcnow
from workers import webhooks
from workers.broker import setup_broker
from workers.locks import hold
from workers.marks import EnqueueMarks
from workers.metrics import record_scan, serve_metrics
from workers.rescan import RescanResult, rescan
from workers.retention import RetentionResult, run_retention

log = logging.getLogger("workers.scheduler")

MAINTENANCE_QUEUE = "mailroom.maintenance"
RESCAN_LOCK = "mailroom:lock:rescan"
DUE_LOCK = "mailroom:lock:rescan-due"
# periodiq's default: a job message older than this is skipped. Our own worker takes each one at
# once; a message this old means the scheduler was stalled, and the next tick will do.
SKIP_DELAY_SECONDS = 30
JOBS = ("rescan", "due", "purge", "retention", "webhooks")
# Turns only guard a writer between reading an email and writing it: a day is plenty.
TURNS_KEPT = timedelta(days=1)


def oldest_waiting(
    client: redis.Redis, queue_name: str, *, namespace: str = "dramatiq"
) -> datetime | None:
    """Return when the message at the head of a Dramatiq Redis queue was enqueued.

    Every message enqueued before it has been fetched by a worker already (the queue is FIFO).
    A message moved from the delay queue counts from its ``eta``. None when the queue is empty
    or the head cannot be read (then the rescan uses its buffer alone).

    Raises:
        redis.RedisError: Redis could not be reached.
    """
    key = f"{namespace}:{queue_name}"
    head = client.lindex(key, 0)
    raw = client.hget(f"{key}.msgs", head) if head is not None else None
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        options = data.get("options") or {}
        millis = max(int(data.get("message_timestamp") or 0), int(options.get("eta") or 0))
    except (ValueError, TypeError, AttributeError):
        log.warning("cannot read the head message of %s; rescanning by buffer alone", key)
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).replace(tzinfo=None)


def parse_cron(spec: str) -> periodiq.CronSpec:
    """Parse a cron line with periodiq, making day-of-week 0 mean Sunday as in cron.

    periodiq matches a date against ``isoweekday()`` (Sunday is 7) but computes the next date
    with Sunday as 0: a day-of-week of ``0`` (or ``sun``, or ``@weekly``) never fires. Listing
    Sunday as both 0 and 7 makes both of its computations agree.

    Raises:
        ValueError: The line is not a valid cron line.
    """
    try:
        spec_obj = periodiq.cron(spec)
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"invalid cron line {spec!r}: {exc}") from exc
    dow = set(spec_obj.dow)
    if dow & {0, 7}:
        spec_obj = spec_obj.replace(dow=sorted(dow | {0, 7}))
    return spec_obj


class Jobs:
    """The scheduler's jobs, sharing one Redis client and one delivery queue.

    Args:
        settings: Rescan, retry and connection settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeout = max(settings.redis_timeout_seconds, 5.0)
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.queue = DeliveryQueue(settings.redis_url, settings.queue_name, timeout_seconds=timeout)
        # Shared by both scans: an email one of them enqueued waits a buffer time for the other.
        self.marks = EnqueueMarks(self.redis)

    def run(self, job: str) -> dict[str, Any]:
        """Run one job by name and return its JSON-friendly result.

        Raises:
            MailroomError: Redis (``QueueUnavailable``) or MongoDB could not be reached.
        """
        if job == "rescan":
            return self.rescan().as_dict()
        if job == "due":
            return self.rescan_due().as_dict()
        if job == "purge":
            return dict(self.purge())
        if job == "retention":
            return self.retention().as_dict()
        if job == "webhooks":
            return dict(self.sweep_webhooks())
        raise ValueError(f"unknown job {job!r}; one of {', '.join(JOBS)}")

    def rescan(self) -> RescanResult:
        """Enqueue again every pending email that has not moved for the buffer time."""
        return self._scan(
            "rescan",
            RESCAN_LOCK,
            buffer=timedelta(seconds=self.settings.rescan.buffer_seconds),
            statuses=None,
        )

    def rescan_due(self) -> RescanResult:
        """Enqueue due SCHEDULED emails, and QUEUED or RETRYING ones stuck for the quick buffer."""
        due = self._scan(
            "due scan",
            DUE_LOCK,
            buffer=timedelta(0),
            statuses=(Status.SCHEDULED,),
            requeue_spacing=timedelta(seconds=self.settings.rescan.buffer_seconds),
        )
        if due.lock_busy or due.aborted:
            return due
        quick = timedelta(seconds=self.settings.rescan.quick_buffer_seconds)
        stuck = self._scan(
            "quick scan",
            DUE_LOCK,
            buffer=quick,
            statuses=(Status.QUEUED, Status.RETRYING),
            requeue_spacing=quick,
        )
        return due.merged(stuck)

    def purge(self) -> dict[str, int]:
        """Delete expired idempotency keys, old email turns and finished webhook deliveries."""
        keys = idempotency.purge_idempotency_keys()
        purged = turns.purge_turns(TURNS_KEPT)
        log.info("purged %d expired idempotency keys and %d old email turns", keys, purged)
        hooks = webhooks.purge(self.settings)
        return {"purged": keys, "purged_turns": purged, "purged_webhook_deliveries": hooks}

    def retention(self) -> RetentionResult:
        """Purge the content of final emails older than ``retention_days``."""
        return run_retention(self.settings, self.redis)

    def sweep_webhooks(self) -> dict[str, int]:
        """Enqueue again the webhook deliveries whose messages were lost (see workers.webhooks)."""
        return webhooks.sweep(webhook_queue(self.settings), self.settings)

    def _scan(
        self,
        job: str,
        lock_name: str,
        *,
        buffer: timedelta,
        statuses: tuple[Status, ...] | None,
        requeue_spacing: timedelta | None = None,
    ) -> RescanResult:
        rescan_settings = self.settings.rescan
        with (
            map_redis_errors(),
            hold(self.redis, lock_name, ttl_seconds=rescan_settings.lock_seconds) as lock,
        ):
            if lock is None:
                result = RescanResult(lock_busy=True)
            else:
                options: dict[str, Any] = {} if statuses is None else {"statuses": statuses}
                waiting_since = oldest_waiting(
                    self.redis, self.settings.queue_name, namespace=self.queue.broker.namespace
                )
                result = rescan(
                    enqueue=self.queue.enqueue_delivery,
                    marks=self.marks,
                    waiting_since=waiting_since,
                    requeue_spacing=requeue_spacing,
                    now=utcnow(),
                    buffer=buffer,
                    batch_size=rescan_settings.batch_size,
                    max_retries=self.settings.retry.max_retries,
                    keep_alive=lock.extend,
                    **options,
                )
        log.log(logging.WARNING if result.aborted else logging.INFO, result.summary(job))
        record_scan(job, result)
        return result

    def close(self) -> None:
        """Release the Redis connections."""
        self.queue.close()
        self.redis.close()


def declare_actors(broker: RedisBroker, jobs: Jobs) -> list[dramatiq.Actor[Any, Any]]:
    """Declare the periodic actors on ``broker`` (which must have the periodiq middleware).

    A job whose cron is empty is not declared. The actors do not retry: a failed run logs its
    error and the next tick runs again (a retry would be skipped by periodiq anyway, being older
    than ``skip_delay``).

    Raises:
        ValueError: A cron line is invalid.
    """
    rescan_settings = jobs.settings.rescan
    specs: list[tuple[str, str, Callable[[], object], int]] = [
        ("mailroom_rescan", rescan_settings.cron, jobs.rescan, 3_600_000),
        ("mailroom_rescan_due", rescan_settings.due_cron, jobs.rescan_due, 600_000),
        ("mailroom_purge", rescan_settings.purge_cron, jobs.purge, 600_000),
        ("mailroom_retention", rescan_settings.retention_cron, jobs.retention, 3_600_000),
        ("mailroom_webhooks_sweep", jobs.settings.webhooks.sweep_cron, jobs.sweep_webhooks, 60_000),
    ]
    actors: list[dramatiq.Actor[Any, Any]] = []
    for name, spec, job, time_limit in specs:
        if not spec.strip():
            log.info("%s disabled (empty cron)", name)
            continue
        decorate = dramatiq.actor(
            actor_name=name,
            queue_name=MAINTENANCE_QUEUE,
            broker=broker,
            max_retries=0,
            time_limit=time_limit,
            periodic=parse_cron(spec),
        )
        actors.append(decorate(_logged(name, job)))
    return actors


def _logged(name: str, job: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except MailroomError as exc:
            # An outage of Redis or MongoDB: the next tick tries again.
            log.error("%s failed: %s: %s", name, type(exc).__name__, exc)

    run.__name__ = name
    run.__qualname__ = name
    return run


class _Scheduler(periodiq.Scheduler):  # type: ignore[misc]
    """periodiq's scheduler, surviving a Redis outage at a tick instead of crashing."""

    def send_actors(self, actors: list[dramatiq.Actor[Any, Any]], now: Any) -> None:
        for actor in actors:
            try:
                with map_redis_errors():
                    super().send_actors([actor], now)
            except QueueUnavailable as exc:
                log.error("could not send %s at %s: %s", actor.actor_name, now, exc)


def serve(settings: Settings) -> int:
    """Run periodiq's scheduling loop and the jobs' worker until SIGTERM or SIGINT."""
    connect(
        settings.mongodb_uri,
        timeout_ms=max(settings.mongodb_timeout_ms, 5_000),
        subscriptions_max_age_seconds=settings.webhooks.subscriptions_max_age_seconds,
    )
    ensure_indexes_in_background()
    broker = setup_broker(settings, metrics=False)
    broker.add_middleware(periodiq.PeriodiqMiddleware(skip_delay=SKIP_DELAY_SECONDS))
    jobs = Jobs(settings)
    actors = declare_actors(broker, jobs)
    if not actors:
        log.error("every job is disabled: nothing to schedule")
        return 1
    periodiq.print_periodic_actors(actors)
    serve_metrics(settings.scheduler_metrics_port)

    worker = dramatiq.Worker(broker, queues={MAINTENANCE_QUEUE}, worker_threads=len(actors))
    worker.start()
    scheduler = _Scheduler(actors=actors)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the scheduler", signum)
        scheduler.alarm_q.put_nowait(False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        # As the periodiq command does: late in a minute, start at the next one.
        second = pendulum.now().second
        if second > 55:
            time.sleep(60 - second)
        scheduler.schedule()
        scheduler.loop()
    finally:
        signal.alarm(0)
        worker.stop(timeout=10_000)
        jobs.close()
        broker.close()
    log.info("scheduler stopped")
    return 0


def run_once(settings: Settings, job: str) -> int:
    """Run one job now and print its result as a JSON line; return the exit status."""
    connect(
        settings.mongodb_uri,
        timeout_ms=max(settings.mongodb_timeout_ms, 5_000),
        subscriptions_max_age_seconds=settings.webhooks.subscriptions_max_age_seconds,
    )
    jobs = Jobs(settings)
    try:
        result = jobs.run(job)
    except MailroomError as exc:
        log.error("%s failed: %s: %s", job, type(exc).__name__, exc)
        print(json.dumps({"job": job, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    finally:
        jobs.close()
    print(json.dumps({"job": job, **result}), flush=True)
    return 1 if result.get("aborted") else 0


def main(argv: list[str] | None = None) -> None:
    """The ``mailroom-scheduler`` command."""
    parser = argparse.ArgumentParser(
        prog="mailroom-scheduler",
        description="Mailroom's periodic jobs: rescans, due scheduled emails, purges, retention.",
    )
    parser.add_argument(
        "--once",
        nargs="?",
        const="rescan",
        choices=JOBS,
        metavar="JOB",
        help="run one job now (rescan, due, purge, retention, webhooks; default rescan), as JSON",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    if args.once:
        sys.exit(run_once(settings, args.once))
    sys.exit(serve(settings))


if __name__ == "__main__":
    main()
