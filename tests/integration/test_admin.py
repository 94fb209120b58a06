"""``mailroom-admin``: providers and their shared breaker state; dead letters, list and replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.store.documents import DeadLetter, Email
from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2
from workers.breaker_state import RedisState
from workers.breakers import BreakerBoard
from workers.mta.base import TransientError

BIN = Path(sys.executable).parent

SENDGRID = {
    "MAILROOM_PROVIDERS__SENDGRID__API_KEY": "sg-key",
    # Never contacted: these tests only read and write breaker state.
    "MAILROOM_PROVIDERS__SENDGRID__BASE_URL": "http://127.0.0.1:9",
    "MAILROOM_PROVIDER_ORDER": '["sendgrid", "smtp"]',
    "MAILROOM_BREAKER__FAIL_MAX": "2",
    "MAILROOM_BREAKER__RESET_TIMEOUT_SECONDS": "30",
}


@pytest.fixture
def admin(service_env):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mailroom-admin"), *args],
            env={**os.environ, **service_env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture(autouse=True)
def empty_redis(redis_client):
    """Start from an empty Redis: a message left by an earlier test's API calls without a worker
    would be delivered by this test's worker."""
    redis_client.flushdb()


@pytest.fixture
def breaker_keys(redis_client):
    """Breaker state written by the test itself; removed afterwards."""
    yield
    for key in redis_client.scan_iter("mailroom:breaker:*"):
        redis_client.delete(key)


def open_sendgrid(redis_client) -> BreakerBoard:
    board = BreakerBoard(["sendgrid"], RedisState(redis_client), fail_max=2, reset_timeout=30)
    for _ in range(2):
        with pytest.raises(TransientError), board["sendgrid"].guard():
            raise TransientError("sendgrid: HTTP 503")
    return board


def test_providers_lists_enabled_providers_with_their_shared_breaker_state(
    admin, redis_client, breaker_keys
):
    opened = time.monotonic()
    open_sendgrid(redis_client)
    RedisState(redis_client).take_out("smtp", "smtp: 535 authentication failed", 120)

    result = admin("providers", "--json", **SENDGRID)
    since_opened = time.monotonic() - opened
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"smtp", "sendgrid", "mailgun", "ses", "postmark"}
    sendgrid = rows["sendgrid"]
    assert (sendgrid["enabled"], sendgrid["priority"], sendgrid["state"]) == (True, 1, "open")
    assert (sendgrid["fail_counter"], sendgrid["fail_max"]) == (2, 2)
    # Counts down from the 30 s reset timeout by the time that passed here: pybreaker keeps the
    # opening time in whole seconds (up to 1 s early) and the CLI rounds to 0.1 s.
    assert 30 - since_opened - 1.1 <= sendgrid["seconds_to_half_open"] <= 30
    assert rows["smtp"]["state"] == "closed"
    assert rows["smtp"]["priority"] == 2
    assert "535" in rows["smtp"]["out_of_rotation"]
    assert rows["mailgun"]["enabled"] is False
    assert "MAILROOM_PROVIDERS__MAILGUN__API_KEY" in rows["mailgun"]["reason"]

    table = admin("providers", **SENDGRID)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()}
    assert lines["PROVIDER"].split()[:6] == [
        "PROVIDER",
        "ENABLED",
        "PRIORITY",
        "BREAKER",
        "FAILURES",
        "HALF-OPEN",
    ]
    assert lines["sendgrid"].split()[:5] == ["sendgrid", "yes", "1", "open", "2/2"]
    assert "out of rotation" in lines["smtp"]
    assert lines["ses"].split()[:2] == ["ses", "no"]


def test_providers_reset_closes_the_breaker_for_every_process(admin, redis_client, breaker_keys):
    board = open_sendgrid(redis_client)
    RedisState(redis_client).take_out("sendgrid", "sendgrid: HTTP 401", 120)
    result = admin("providers", "reset", "sendgrid", **SENDGRID)
    assert result.returncode == 0, result.stderr
    status = board["sendgrid"].status()
    assert (status.state, status.fail_counter, status.out_of_rotation) == ("closed", 0, "")


def test_providers_without_redis_fails_clearly(admin):
    result = admin("providers", MAILROOM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


def dead_letter_of(email_id):
    def check():
        record = DeadLetter.objects(email_id=email_id).first()
        return record if record is not None and record.replayed_at is None else None

    return wait_until(check, timeout=30, interval=0.1, message=f"{email_id} is dead-lettered")


def send(mail_client, title="Dead letter"):
    reply = mail_client.SendEmail(
        mail_pb2.SendEmailRequest(to=["x@example.com"], title=title, content="body"), timeout=5
    )
    return reply.id


def status_of(email_id):
    return Email.objects(id=email_id).first().status


def test_dead_letter_listed_replayed_and_sent_keeping_its_history(
    admin, worker, smtp_sink, mail_client, real_store
):
    # max_retries=3: four refusals exhaust the email.
    smtp_sink.respond_with(451, "4.3.0 mailbox busy", times=4)
    email_id = send(mail_client)
    record = dead_letter_of(email_id)
    assert status_of(email_id) == "FAILED"
    assert len(record.attempts) == 4

    listing = admin("dead-letters", "list")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if line.startswith(email_id)]
    assert line.split()[3] == "4"  # id, date, time, attempts
    assert "retries exhausted after 4 attempts" in line

    replay = admin("dead-letters", "replay", email_id)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"{email_id}: replayed" in replay.stdout
    smtp_sink.wait_for_count(1, timeout=20)
    wait_until(lambda: status_of(email_id) == "SENT", timeout=20, message="the replay is sent")

    email = Email.objects(id=email_id).first()
    assert [a.outcome for a in email.attempts] == ["TRANSIENT"] * 4 + ["DELIVERED"]
    # Counters restarted at the replay; the history is whole.
    assert (email.attempt_count, dict(email.provider_attempts)) == (1, {"smtp": 1})
    assert email.last_error == ""
    assert DeadLetter.objects(email_id=email_id).first().replayed_at is not None

    # No longer pending; still there with --include-replayed.
    assert email_id not in admin("dead-letters", "list").stdout
    replayed = json.loads(admin("dead-letters", "list", "--include-replayed", "--json").stdout)
    assert [d["replayed_at"] is not None for d in replayed if d["id"] == email_id] == [True]

    # Replaying a sent email changes nothing.
    again = admin("dead-letters", "replay", email_id)
    assert again.returncode == 0
    assert "not FAILED any more, skipped" in again.stdout
    assert status_of(email_id) == "SENT"
    assert len(smtp_sink.messages) == 1


def test_replay_gives_a_fresh_retry_budget_and_all_replays_every_pending_letter(
    admin, start_worker, smtp_sink, mail_client, real_store
):
    # Eight refusals in a row would open the SMTP breaker (5): keep this about the retry budget.
    start_worker(MAILROOM_BREAKER__FAIL_MAX="100")
    smtp_sink.respond_with(451, "4.3.0 mailbox busy", times=8)
    email_id = send(mail_client)
    dead_letter_of(email_id)

    # Replayed while the relay still refuses: four more attempts, not one, before it dies again.
    assert admin("dead-letters", "replay", "--all").returncode == 0
    wait_until(
        lambda: (
            len(Email.objects(id=email_id).first().attempts) == 8
            and status_of(email_id) == "FAILED"
        ),
        timeout=30,
        message="the replayed email exhausts a fresh budget",
    )
    record = dead_letter_of(email_id)
    assert len(record.attempts) == 8

    assert admin("dead-letters", "replay", "--all").returncode == 0
    wait_until(
        lambda: status_of(email_id) == "SENT", timeout=20, message="the second replay is sent"
    )
    assert len(smtp_sink.messages) == 1


def test_replay_of_an_unknown_id_fails_and_needs_ids_or_all(admin, real_store):
    result = admin("dead-letters", "replay", "0123456789abcdef01234567")
    assert result.returncode == 1
    assert "no dead letter" in result.stdout
    usage = admin("dead-letters", "replay")
    assert usage.returncode == 2
    assert "ID" in usage.stderr and "--all" in usage.stderr
