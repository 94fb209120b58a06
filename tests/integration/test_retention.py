"""Retention: final emails older than ``retention_days`` lose their content, and nothing else.

Real processes: FerretDB on PostgreSQL, Redis, the API behind Envoy, a worker delivering into the
SMTP sink, ``mailroom-scheduler`` (on its cron, and ``--once retention``) and ``mailroom-admin``.
Old emails are stored as the API and a worker would have left them weeks ago (their ids made
then too); the default retention of 30 days applies, so no other test's email is old enough.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from core.store import repository
from core.store.documents import DeadLetter, Email, Status, utcnow
from devtools.services import ManagedProcess
from helpers import wait_until
from mailroom.v1 import mail_pb2
from workers.locks import hold
from workers.retention import RETENTION_LOCK

BIN = Path(sys.executable).parent
DOMAIN = "mailroom.test"
OLD = timedelta(days=45)
PDF = b"%PDF-1.4 quarterly report " * 40
LOGO = b"\x89PNG\r\n\x1a\n logo"


def stored_long_ago(
    status: Status, *, age: timedelta = OLD, subject: str = "Your invoice", **fields: Any
) -> str:
    """Store an email accepted and last changed ``age`` ago, with attachments and headers."""
    then = utcnow() - age
    email_id = ObjectId(ObjectId.from_datetime(then).binary[:4] + os.urandom(8))
    new = repository.NewEmail(
        to=["Ann <ann@example.com>"],
        subject=subject,
        text="Hello Ann, your invoice is attached.\n",
        html="<p>Hello Ann</p><img src='cid:logo'>",
        from_address="billing@example.com",
        attachments=[
            repository.NewAttachment("invoice.pdf", "application/pdf", PDF),
            repository.NewAttachment("logo.png", "image/png", LOGO, content_id="logo"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["invoice"],
        metadata={"customer": "c-42"},
    )
    document = repository.new_email_document(
        new, message_id_domain=DOMAIN, email_id=email_id, now=then
    )
    document["status"] = str(status)
    if status in (Status.SENT, Status.FAILED):
        outcome = "DELIVERED" if status == Status.SENT else "PERMANENT"
        document["attempts"] = [
            {
                "provider": "smtp",
                "started_at": then,
                "duration_ms": 120.0,
                "outcome": outcome,
                "response": "250 2.0.0 queued" if status == Status.SENT else "",
                "error": "" if status == Status.SENT else "550 5.1.1 no such mailbox",
                "worker": "worker-1",
            }
        ]
        document["attempt_count"] = 1
        document["provider"] = "smtp"
    if status == Status.SENT:
        document["sent_at"] = then
    if status == Status.FAILED:
        document["last_error"] = "550 5.1.1 no such mailbox"
    document.update(fields)
    repository.insert_email(document)
    return str(email_id)


def rest_email(envoy, email_id: str) -> dict[str, Any]:
    status, _, body = envoy.request("GET", f"/api/email/{email_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body["email"]


def assert_purged_over_rest(email: dict[str, Any], status: str, providers: list[str]) -> None:
    """What GetEmail shows of a purged email: the record without its content."""
    assert email["status"] == status
    assert (email["content"], email["html"], email.get("headers", {})) == ("", "", {})
    assert email["title"] == "Your invoice"
    assert email["to"] == ["Ann <ann@example.com>"]
    assert (email["tags"], email["metadata"]) == (["invoice"], {"customer": "c-42"})
    assert [
        (a["filename"], a["contentType"], a.get("contentId", ""), int(a["size"]), a.get("content"))
        for a in email["attachments"]
    ] == [
        ("invoice.pdf", "application/pdf", "", len(PDF), ""),
        ("logo.png", "image/png", "logo", len(LOGO), ""),
    ]
    assert [a["provider"] for a in email["attempts"]] == providers
    assert email["purgeTime"]


def assert_whole_over_rest(email: dict[str, Any]) -> None:
    assert email["content"] == "Hello Ann, your invoice is attached.\n"
    assert email["headers"] == {"X-Campaign": "spring"}
    assert [base64.b64decode(a["content"]) for a in email["attachments"]] == [PDF, LOGO]
    assert "purgeTime" not in email


def scheduler_once(service_env: dict[str, str], job: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(BIN / "mailroom-scheduler"), "--once", job],
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"scheduler failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def admin(service_env):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mailroom-admin"), *args],
            env={**os.environ, **service_env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def retention_scheduler(service_env, tmp_path):
    """``mailroom-scheduler`` running the retention job every minute, and no other job."""
    log_path = tmp_path / "scheduler.log"
    handle = ManagedProcess(
        "scheduler",
        [str(BIN / "mailroom-scheduler")],
        log_path=log_path,
        ready=lambda: "mailroom_retention" in log_path.read_text(),
        ready_timeout=60,
        env={
            **service_env,
            "MAILROOM_RESCAN__RETENTION_CRON": "* * * * *",
            "MAILROOM_RESCAN__CRON": "",
            "MAILROOM_RESCAN__DUE_CRON": "",
            "MAILROOM_RESCAN__PURGE_CRON": "",
        },
    ).start()
    yield handle
    handle.stop()


def test_the_scheduler_purges_old_final_emails_on_its_cron(
    envoy, real_store, retention_scheduler
) -> None:
    sent = stored_long_ago(Status.SENT)
    cancelled = stored_long_ago(Status.CANCELLED)
    # Weeks old but on its way (scheduled for later): never purged, however old.
    waiting = stored_long_ago(Status.SCHEDULED, send_at=utcnow() + timedelta(days=10))
    recent = stored_long_ago(Status.SENT, age=timedelta(days=20))

    def purged(email_id: str) -> bool:
        return Email.objects(id=email_id).only("purged_at").first().purged_at is not None

    # The cron ticks at each minute; a busy machine may take a while to run the job.
    wait_until(
        lambda: purged(sent) and purged(cancelled),
        timeout=180,
        interval=1,
        message="the scheduler's retention job purged the old final emails",
    )

    assert_purged_over_rest(rest_email(envoy, sent), "EMAIL_STATUS_SENT", ["smtp"])
    assert_purged_over_rest(rest_email(envoy, cancelled), "EMAIL_STATUS_CANCELLED", [])
    assert_whole_over_rest(rest_email(envoy, waiting))
    assert_whole_over_rest(rest_email(envoy, recent))
    assert "retention: purged" in retention_scheduler.log_path.read_text()


def test_a_purged_dead_letter_is_kept_for_the_record_and_cannot_be_replayed(
    admin, mail_client, real_store
) -> None:
    email_id = stored_long_ago(Status.FAILED)
    DeadLetter(
        email_id=email_id,
        failed_at=utcnow() - OLD,
        last_error="550 5.1.1 no such mailbox",
        retries=0,
        message={},
    ).save()

    run = admin("retention", "run", "--json")

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["purged"] >= 1
    email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
    assert email.status == mail_pb2.EMAIL_STATUS_FAILED
    assert (email.content, email.html, dict(email.headers)) == ("", "", {})
    assert [(a.filename, a.size, a.content) for a in email.attachments] == [
        ("invoice.pdf", len(PDF), b""),
        ("logo.png", len(LOGO), b""),
    ]
    assert email.last_error == "550 5.1.1 no such mailbox"
    assert [a.error for a in email.attempts] == ["550 5.1.1 no such mailbox"]
    assert email.HasField("purge_time")
    purge_time = email.purge_time.ToDatetime()

    replay = admin("dead-letters", "replay", email_id)

    assert replay.returncode == 1
    assert "purged by retention" in replay.stdout
    # Replaying every letter skips it (nothing to send) without failing the others' replay.
    replay_all = admin("dead-letters", "replay", "--all")
    assert replay_all.returncode == 0, replay_all.stdout
    assert f"{email_id}: skipped: email {email_id} was purged by retention" in replay_all.stdout
    after = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
    assert after.status == mail_pb2.EMAIL_STATUS_FAILED
    # A second run finds nothing more to do with it.
    again = admin("retention", "run", "--days", "30")
    assert again.returncode == 0, again.stderr
    assert after.purge_time.ToDatetime() == purge_time
    assert (
        mail_client.GetEmail(
            mail_pb2.GetEmailRequest(id=email_id), timeout=10
        ).email.purge_time.ToDatetime()
        == purge_time
    )


def test_one_run_at_a_time_and_a_just_delivered_email_is_kept(
    envoy, worker, smtp_sink, redis_client, service_env, real_store
) -> None:
    old = stored_long_ago(Status.SENT)
    status, _, body = envoy.request(
        "POST",
        "/api/email",
        {
            "to": ["bob@example.com"],
            "title": "Fresh",
            "content": "Delivered just now.\n",
            "from": "billing@example.com",
        },
    )
    assert status == 201, body
    fresh = body["id"]
    wait_until(
        lambda: rest_email(envoy, fresh)["status"] == "EMAIL_STATUS_SENT",
        timeout=60,
        message="the fresh email delivered",
    )

    with hold(redis_client, RETENTION_LOCK, ttl_seconds=120) as lock:
        assert lock is not None
        busy = scheduler_once(service_env, "retention")
    assert (busy["lock_busy"], busy["purged"]) == (True, 0)
    assert Email.objects(id=old).only("purged_at").first().purged_at is None

    done = scheduler_once(service_env, "retention")

    assert done["lock_busy"] is False
    assert done["purged"] >= 1
    assert_purged_over_rest(rest_email(envoy, old), "EMAIL_STATUS_SENT", ["smtp"])
    kept = rest_email(envoy, fresh)
    assert (kept["content"], kept["status"]) == ("Delivered just now.\n", "EMAIL_STATUS_SENT")
    assert "purgeTime" not in kept
    assert any(m.message["Message-ID"] == f"<{fresh}@{DOMAIN}>" for m in smtp_sink.messages)
