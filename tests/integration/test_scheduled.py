"""Scheduled sends and cancel: held until ``send_at``, out within a minute, cancelled never sent."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from devtools.services import ManagedProcess
from helpers import wait_until
from mailroom.v1 import mail_pb2

BIN = Path(sys.executable).parent
DOMAIN = "mailroom.test"
MAIL_QUEUE = "dramatiq:mail"
# The minute scan ticks at hh:mm:00 (cron "* * * * *"). send_at is put half-way between two
# ticks, at least AHEAD from now so that one tick passes while the emails wait for it.
AHEAD = timedelta(seconds=45)
TICK = timedelta(minutes=1)


def half_past_a_minute(at_least: timedelta) -> datetime:
    """Return the first hh:mm:30 that is at least ``at_least`` from now."""
    earliest = datetime.now(UTC) + at_least
    at = earliest.replace(second=30, microsecond=0)
    return at if at >= earliest else at + TICK


def send(client, subject: str, send_at: datetime | None = None) -> str:
    request = mail_pb2.SendEmailRequest(
        to=["to@example.com"], title=subject, content="Body\n", from_address="from@example.com"
    )
    if send_at is not None:
        stamp = Timestamp()
        stamp.FromDatetime(send_at)
        request.send_at.CopyFrom(stamp)
    return client.SendEmail(request, timeout=10).id


def get(client, email_id: str) -> mail_pb2.Email:
    return client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email


def arrival(sink, email_id: str) -> datetime | None:
    for message in sink.messages:
        if message.message["Message-ID"] == f"<{email_id}@{DOMAIN}>":
            return message.received_at
    return None


def pending_message(redis_client, email_id: str) -> bool:
    """Whether a delivery message for the email is still waiting or not yet acknowledged."""
    for key in (f"{MAIL_QUEUE}.msgs", f"{MAIL_QUEUE}.DQ.msgs"):
        for raw in redis_client.hvals(key):
            if json.loads(raw)["args"] == [email_id]:
                return True
    return False


@pytest.fixture
def scheduler(service_env, tmp_path, start_worker):
    """A running ``mailroom-scheduler`` with the default crons (due scan every minute)."""
    log_path = tmp_path / "scheduler.log"

    def ticking() -> bool:
        return "Scheduling Actor(mailroom_rescan_due)" in log_path.read_text()

    handle = ManagedProcess(
        "scheduler",
        [str(BIN / "mailroom-scheduler")],
        log_path=log_path,
        ready=ticking,
        ready_timeout=30,
        env=service_env,
    ).start()
    yield handle
    handle.stop()


def test_scheduled_email_waits_for_send_at_and_goes_out_within_a_minute(
    api, mail_client, redis_server, start_worker, smtp_sink, scheduler
) -> None:
    start_worker()
    send_at = half_past_a_minute(AHEAD)
    next_tick = send_at + TICK / 2  # the first scan that finds the emails due
    # Accepted while Redis is down, by an API that dies before Redis is back (its in-process
    # enqueue backlog with it): no delayed message at all, only the scheduler can send it.
    redis_server.stop()
    lost = send(mail_client, "scheduled, message lost", send_at)
    api.kill()
    redis_server.start()
    api.start()
    # (After the outage: a worker's consumer that reconnects drops the delayed messages it held.)
    delayed = send(mail_client, "scheduled", send_at)
    cancelled = send(mail_client, "scheduled, then cancelled", send_at)
    reply = mail_client.CancelEmail(mail_pb2.CancelEmailRequest(id=cancelled), timeout=10)

    assert reply.email.status == mail_pb2.EMAIL_STATUS_CANCELLED
    assert get(mail_client, delayed).status == mail_pb2.EMAIL_STATUS_SCHEDULED
    assert get(mail_client, lost).status == mail_pb2.EMAIL_STATUS_SCHEDULED
    remaining = (next_tick + TICK - datetime.now(UTC)).total_seconds()
    arrivals = wait_until(
        lambda: (
            [arrival(smtp_sink, i) for i in (delayed, lost)]
            if arrival(smtp_sink, delayed) and arrival(smtp_sink, lost)
            else None
        ),
        timeout=remaining + 30,
        interval=0.2,
        message="both scheduled emails delivered",
    )

    late = [(at - send_at).total_seconds() for at in arrivals]
    print(f"\nscheduled: sent {late[0]:.1f}s (delayed message), {late[1]:.1f}s (minute scan)")
    assert all(seconds >= 0 for seconds in late), f"delivered before send_at: {late}"
    # Ticks, not durations: sent by the first scan that found them due at the latest (30 s
    # after send_at), so before the scan after it; a slow machine only eats into that minute.
    assert all(at < next_tick + TICK for at in arrivals), f"missed the first due scan: {late}"
    assert get(mail_client, delayed).status == mail_pb2.EMAIL_STATUS_SENT
    assert get(mail_client, lost).status == mail_pb2.EMAIL_STATUS_SENT
    assert arrival(smtp_sink, cancelled) is None
    assert get(mail_client, cancelled).status == mail_pb2.EMAIL_STATUS_CANCELLED


def test_send_at_in_the_past_sends_now(mail_client, start_worker, smtp_sink) -> None:
    start_worker()
    email_id = send(mail_client, "overdue", datetime.now(UTC) - timedelta(minutes=5))

    wait_until(lambda: arrival(smtp_sink, email_id), timeout=20, message="sent at once")


def test_cancelled_queued_email_never_reaches_the_sink(
    mail_client, start_worker, smtp_sink, redis_client
) -> None:
    cancelled = send(mail_client, "cancel me")  # no worker yet: QUEUED, message waiting
    reply = mail_client.CancelEmail(mail_pb2.CancelEmailRequest(id=cancelled), timeout=10)
    assert reply.email.status == mail_pb2.EMAIL_STATUS_CANCELLED
    assert pending_message(redis_client, cancelled)

    start_worker()
    after = send(mail_client, "sent after the cancelled one")

    wait_until(lambda: arrival(smtp_sink, after), timeout=20, message="the next email sent")
    wait_until(
        lambda: not pending_message(redis_client, cancelled),
        timeout=20,
        message="the cancelled email's message consumed",
    )
    assert arrival(smtp_sink, cancelled) is None
    assert get(mail_client, cancelled).status == mail_pb2.EMAIL_STATUS_CANCELLED


def test_cancelling_a_sent_email_is_refused_naming_its_status(
    mail_client, envoy, start_worker, smtp_sink
) -> None:
    start_worker()
    email_id = send(mail_client, "too late to cancel")
    wait_until(
        lambda: get(mail_client, email_id).status == mail_pb2.EMAIL_STATUS_SENT,
        timeout=20,
        message="email SENT",
    )

    with pytest.raises(grpc.RpcError) as refused:
        mail_client.CancelEmail(mail_pb2.CancelEmailRequest(id=email_id), timeout=10)
    status, _, body = envoy.request("POST", f"/api/email/{email_id}:cancel", {})

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SENT" in refused.value.details()
    assert status == 400, body
    assert "SENT" in body["message"]


def test_send_at_more_than_30_days_ahead_is_rejected_naming_send_at(envoy) -> None:
    too_far = datetime.now(UTC) + timedelta(days=30, hours=1)

    status, _, body = envoy.request(
        "POST",
        "/api/email",
        {
            "to": ["to@example.com"],
            "title": "next month",
            "content": "hi",
            "sendAt": too_far.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )

    assert status == 400, body
    violations = [
        violation
        for detail in body.get("details", [])
        for violation in detail.get("fieldViolations", [])
    ]
    assert [v["field"] for v in violations] == ["send_at"], body
    assert "30 days" in violations[0]["description"]
