"""The rescan's choices over an in-memory store: what is stale, what is enqueued, what is failed."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pendulum
import pytest
from bson import ObjectId

from core.errors import QueueUnavailable
from core.store import repository
from core.store.documents import Attempt, DeadLetter, Email, Outcome, Status, utcnow
from helpers import create_email
from workers.rescan import rescan
from workers.scheduler import parse_cron
from workers.store import claims
from workers.store.pending import spent_retries

BUFFER = timedelta(minutes=30)
LONG_AGO = timedelta(hours=2)


class Queue:
    """Records enqueued ids; can be told to fail like an unreachable Redis."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.ids: list[str] = []
        self.fail_after = fail_after

    def __call__(self, email_id: str) -> None:
        if self.fail_after is not None and len(self.ids) >= self.fail_after:
            raise QueueUnavailable("queue unavailable: ConnectionError: refused")
        self.ids.append(email_id)


class Marks:
    """In-memory enqueue marks, like workers.marks.EnqueueMarks."""

    def __init__(self) -> None:
        self.marked: dict[str, datetime] = {}

    def take(self, email_ids: list[str], *, now: datetime, not_after: datetime) -> list[bool]:
        taken = []
        for email_id in email_ids:
            stamp = self.marked.get(email_id)
            taken.append(stamp is None or stamp <= not_after)
            if taken[-1]:
                self.marked[email_id] = now
        return taken

    def release(self, email_id: str) -> None:
        self.marked.pop(email_id, None)


def make_email(status: Status, *, age: timedelta = LONG_AGO, **fields: object) -> str:
    """An email accepted ``age`` ago (its id made then, as the API makes it) and left so."""
    then = utcnow() - age
    email = create_email(
        repository.NewEmail(
            to=["to@example.com"], subject="s", text="t", from_address="from@example.com"
        ),
        message_id_domain="test",
        email_id=ObjectId(ObjectId.from_datetime(then).binary[:4] + os.urandom(8)),
    )
    Email.objects(id=email.id).update_one(
        set__status=status, set__created_at=then, set__updated_at=then, **fields
    )
    return str(email.id)


def attempts(*outcomes: Outcome) -> list[Attempt]:
    return [
        Attempt(started_at=utcnow(), outcome=o, error=f"try {n}") for n, o in enumerate(outcomes)
    ]


def run(queue: Queue, *, now: datetime | None = None, marks: Marks | None = None, **options):
    return rescan(
        enqueue=queue,
        marks=marks or Marks(),
        now=now or utcnow(),
        buffer=BUFFER,
        batch_size=options.pop("batch_size", 100),  # type: ignore[arg-type]
        max_retries=options.pop("max_retries", 3),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def status_of(email_id: str) -> Status:
    return Status(Email.objects(id=email_id).first().status)


def test_requeues_each_kind_of_stuck_email_once(fake_store) -> None:
    now = utcnow()
    queued = make_email(Status.QUEUED)
    scheduled_due = make_email(Status.SCHEDULED, set__send_at=now - timedelta(hours=1))
    # A worker claimed it and died: the claim writes nothing, so the email shows QUEUED.
    sending_dead = make_email(Status.QUEUED)
    claims.claim(claims.load_claimable(sending_dead), owner="w1", lease_seconds=-3600)
    retrying_overdue = make_email(
        Status.RETRYING,
        set__next_attempt_at=now - timedelta(hours=1),
        set__attempts=attempts(Outcome.TRANSIENT),
        set__attempt_count=1,
    )
    queue = Queue()

    result = run(queue, now=now)

    assert sorted(queue.ids) == sorted([queued, scheduled_due, sending_dead, retrying_overdue])
    assert result.found == {"QUEUED": 2, "SCHEDULED": 1, "RETRYING": 1}
    assert sum(result.requeued.values()) == 4
    # The scan only enqueues: the worker's claim decides, so statuses are untouched.
    assert status_of(scheduled_due) == Status.SCHEDULED
    assert status_of(sending_dead) == Status.QUEUED
    assert "re-enqueued 4" in result.summary()


def test_leaves_alone_what_moved_recently_is_final_or_is_not_due(fake_store) -> None:
    now = utcnow()
    make_email(Status.QUEUED, age=timedelta(minutes=5))
    make_email(Status.SCHEDULED, set__send_at=now + timedelta(hours=1))
    make_email(Status.SCHEDULED, set__send_at=now - timedelta(minutes=5))  # within the buffer
    make_email(Status.QUEUED, age=timedelta(minutes=29))
    make_email(Status.RETRYING, set__next_attempt_at=now - timedelta(minutes=5))
    for final in (Status.SENT, Status.FAILED, Status.CANCELLED):
        make_email(final)
    queue = Queue()

    result = run(queue, now=now)

    assert queue.ids == []
    assert sum(result.found.values()) == 0


def test_a_second_scan_right_after_enqueues_nothing_again(fake_store) -> None:
    ids = {make_email(Status.QUEUED) for _ in range(3)}
    first, second = Queue(), Queue()
    marks = Marks()

    run(first, marks=marks)
    result = run(second, marks=marks)

    assert set(first.ids) == ids
    assert second.ids == []
    assert result.found == {"QUEUED": 3}
    assert result.skipped == 3
    assert "3 enqueued recently" in result.summary()


def test_still_stuck_after_another_buffer_is_enqueued_again(fake_store) -> None:
    email_id = make_email(Status.QUEUED)
    queue = Queue()
    marks = Marks()

    run(queue, marks=marks)
    run(queue, marks=marks, now=utcnow() + BUFFER / 2)
    run(queue, marks=marks, now=utcnow() + BUFFER + timedelta(seconds=1))

    assert queue.ids == [email_id, email_id]


def test_retrying_with_spent_budget_is_failed_with_a_reason(fake_store) -> None:
    email_id = make_email(
        Status.RETRYING,
        set__next_attempt_at=utcnow() - timedelta(hours=1),
        set__attempts=attempts(*[Outcome.TRANSIENT] * 4),
        set__attempt_count=4,
        set__last_error="smtp: 451 try later",
    )
    queue = Queue()

    result = run(queue, max_retries=3)

    assert queue.ids == []
    assert result.failed == [email_id]
    email = Email.objects(id=email_id).first()
    assert email.status == Status.FAILED
    assert "retries exhausted after 4 failed attempts" in email.last_error
    assert "smtp: 451 try later" in email.last_error
    assert DeadLetter.objects(email_id=email_id).first() is not None


def test_budget_counts_like_delivery_after_a_replay_reset(fake_store) -> None:
    # Replayed from the dead letters: attempt_count reset to 1, old failures no longer count.
    email_id = make_email(
        Status.RETRYING,
        set__next_attempt_at=utcnow() - timedelta(hours=1),
        set__attempts=attempts(*[Outcome.TRANSIENT] * 4, Outcome.INTERRUPTED, Outcome.TRANSIENT),
        set__attempt_count=1,
    )
    queue = Queue()

    run(queue, max_retries=3)

    assert queue.ids == [email_id]
    assert spent_retries(["TRANSIENT", "THROTTLED", "NO_PROVIDER", "INTERRUPTED"], 3) == 2


def test_walks_in_batches_and_keeps_the_lock_alive_between_them(fake_store) -> None:
    ids = {make_email(Status.QUEUED) for _ in range(7)}
    queue = Queue()
    calls: list[int] = []

    def keep_alive() -> bool:
        calls.append(len(queue.ids))
        return True

    run(queue, batch_size=3, keep_alive=keep_alive)

    assert set(queue.ids) == ids
    assert len(queue.ids) == 7
    assert calls[:3] == [3, 6, 7]


def test_stops_when_the_lock_is_lost(fake_store) -> None:
    for _ in range(5):
        make_email(Status.QUEUED)
    queue = Queue()

    result = run(queue, batch_size=2, keep_alive=lambda: False)

    assert len(queue.ids) == 2
    assert result.aborted == "lost the rescan lock"


def test_queue_outage_stops_the_scan_and_leaves_the_email_for_the_next(fake_store) -> None:
    first = make_email(Status.QUEUED)
    second = make_email(Status.SCHEDULED, set__send_at=utcnow() - LONG_AGO)
    failing = Queue(fail_after=0)
    marks = Marks()

    result = run(failing, marks=marks)

    assert failing.ids == []
    assert result.aborted.startswith("queue unavailable")
    assert marks.marked == {}  # nothing enqueued, nothing marked
    working = Queue()
    run(working, marks=marks)
    assert sorted(working.ids) == sorted([first, second])


def test_due_scan_takes_only_scheduled_emails_past_send_at(fake_store) -> None:
    now = utcnow()
    due = make_email(Status.SCHEDULED, set__send_at=now - timedelta(seconds=1))
    make_email(Status.SCHEDULED, set__send_at=now + timedelta(hours=1))
    make_email(Status.QUEUED)
    queue = Queue()
    marks = Marks()

    for minute in range(3):  # the minute scan, three times; no worker took the email meanwhile
        rescan(
            enqueue=queue,
            marks=marks,
            now=now + timedelta(minutes=minute),
            buffer=timedelta(0),
            requeue_spacing=BUFFER,
            batch_size=10,
            max_retries=3,
            statuses=(Status.SCHEDULED,),
        )

    assert queue.ids == [due]


@pytest.mark.parametrize("spec", ["0 3 * * 0", "0 3 * * sun", "0 3 * * 7", "@weekly"])
def test_cron_sunday_fires_on_sunday(spec: str) -> None:
    cron = parse_cron(spec)
    hour = 0 if spec == "@weekly" else 3
    sunday = pendulum.datetime(2026, 11, 29, hour, 0, tz="UTC")  # a Sunday
    saturday = pendulum.datetime(2026, 11, 28, 12, 0, tz="UTC")

    assert cron.validate(sunday)
    assert cron.next_valid_date(saturday) == sunday
    assert not cron.validate(saturday.replace(hour=hour, minute=0))


def test_default_crons_parse() -> None:
    from core.settings import RescanSettings

    rescan_settings = RescanSettings()
    every_30 = parse_cron(rescan_settings.cron)
    assert every_30.validate(pendulum.datetime(2026, 11, 28, 10, 30, tz="UTC"))
    assert not every_30.validate(pendulum.datetime(2026, 11, 28, 10, 31, tz="UTC"))
    assert parse_cron(rescan_settings.due_cron).validate(pendulum.datetime(2026, 11, 28, 10, 31))
    with pytest.raises(ValueError, match="invalid cron"):
        parse_cron("every day")


def test_a_backlog_waiting_on_the_queue_is_not_enqueued_twice(fake_store) -> None:
    now = utcnow()
    lost = make_email(Status.QUEUED, age=timedelta(hours=3))  # before the queue's head
    waiting = make_email(Status.QUEUED, age=timedelta(hours=1))  # behind it: just waiting
    retry_waiting = make_email(
        Status.RETRYING, age=timedelta(hours=1), set__next_attempt_at=now - timedelta(hours=1)
    )
    queue = Queue()

    run(queue, now=now, waiting_since=now - timedelta(hours=2))

    assert queue.ids == [lost]
    assert waiting not in queue.ids
    assert retry_waiting not in queue.ids


def test_an_email_enqueued_again_is_not_doubled_while_its_message_waits(fake_store) -> None:
    now = utcnow()
    dead_worker = make_email(Status.QUEUED, age=timedelta(hours=1))
    claims.claim(claims.load_claimable(dead_worker), owner="w1", lease_seconds=-3600)
    queue = Queue()
    marks = Marks()

    run(queue, now=now, marks=marks)
    later = now + BUFFER + timedelta(minutes=1)
    # Its message still waits behind a backlog that started before it was enqueued again.
    run(queue, now=later, marks=marks, waiting_since=now - timedelta(minutes=1))
    assert queue.ids == [dead_worker]
    # The queue moved past it, and it is still stuck: enqueue it again.
    run(queue, now=later, marks=marks, waiting_since=now + timedelta(minutes=1))
    assert queue.ids == [dead_worker, dead_worker]
