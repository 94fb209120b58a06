"""The Python SDK against the real API, worker and SMTP sink."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import mailroom
from mailroom import (
    AsyncMailroomClient,
    Attachment,
    AttemptOutcome,
    EmailStatus,
    MailroomClient,
    OutgoingEmail,
)

SDK = Path(__file__).resolve().parents[2] / "sdk"
UNKNOWN_ID = "0" * 24  # well-formed, never issued


def _messages_for(sink, email_id):
    return [m for m in sink.messages if m.message["X-Mailroom-Id"] == email_id]


def _env_for(api) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILROOM_API_KEY"}
    env["MAILROOM_TARGET"] = api.target
    return env


def test_send_and_wait_for_delivery(api, worker, smtp_sink):
    with MailroomClient(api.target) as client:
        email_id = client.send_email(
            ["alice@example.com"],
            "SDK hello",
            "Hi Alice!",
            cc=["carol@example.com"],
            html="<p>Hi Alice!</p>",
            reply_to="help@example.com",
        )
        email = client.wait_for_delivery(email_id, timeout=30)
    assert email.status is EmailStatus.SENT
    assert email.id == email_id
    assert email.to == ["alice@example.com"]
    assert email.cc == ["carol@example.com"]
    assert email.reply_to == "help@example.com"
    assert email.create_time is not None and email.create_time.tzinfo is not None
    assert email.sent_time is not None and email.sent_time >= email.create_time
    assert [a.outcome for a in email.attempts] == [AttemptOutcome.DELIVERED]
    [received] = _messages_for(smtp_sink, email_id)
    assert received.message["Subject"] == "SDK hello"
    assert sorted(received.rcpt_tos) == ["alice@example.com", "carol@example.com"]


def test_invalid_address_raises_invalid_argument_naming_the_field(api):
    with MailroomClient(api.target) as client, pytest.raises(mailroom.InvalidArgument) as info:
        client.send_email(["not-an-address"], "t", "c")
    assert "to[0]" in [v.field for v in info.value.violations]
    assert info.value.code.name == "INVALID_ARGUMENT"


def test_unknown_email_raises_not_found(api):
    with MailroomClient(api.target) as client, pytest.raises(mailroom.NotFound):
        client.get_email(UNKNOWN_ID)


def test_a_scheduled_email_can_be_cancelled_once(api, smtp_sink):
    send_at = datetime.now(UTC) + timedelta(hours=1)
    with MailroomClient(api.target) as client:
        email_id = client.send_email("alice@example.com", "later", "c", send_at=send_at)
        email = client.get_email(email_id)
        assert email.status is EmailStatus.SCHEDULED
        assert email.send_at is not None
        assert abs(email.send_at - send_at) < timedelta(seconds=1)
        assert client.cancel_email(email_id).status is EmailStatus.CANCELLED
        assert client.wait_for_delivery(email_id, timeout=5).status is EmailStatus.CANCELLED
        with pytest.raises(mailroom.FailedPrecondition):
            client.cancel_email(email_id)
    assert _messages_for(smtp_sink, email_id) == []


def test_the_same_idempotency_key_sends_one_email(api, worker, smtp_sink):
    with MailroomClient(api.target) as client:
        first = client.send_email("alice@example.com", "once", "c", idempotency_key="sdk-order-1")
        again = client.send_email("alice@example.com", "once", "c", idempotency_key="sdk-order-1")
        assert again == first
        with pytest.raises(mailroom.AlreadyExists):
            client.send_email("bob@example.com", "other", "c", idempotency_key="sdk-order-1")
        assert client.wait_for_delivery(first, timeout=30).status is EmailStatus.SENT
    assert len(_messages_for(smtp_sink, first)) == 1


def test_server_stopped_gives_unavailable_after_retries_within_the_deadline(api):
    with MailroomClient(api.target, timeout=15) as client:
        api.stop()
        started = time.monotonic()
        # Unavailable, not DeadlineExceeded: the retries gave up before the 15 s deadline.
        with pytest.raises(mailroom.Unavailable):
            client.send_email("alice@example.com", "t", "c")
        elapsed = time.monotonic() - started
    # The default policy waits ~0.5 + 1 + 2 + 4 s (±20 %, so at least 6 s) between its five
    # attempts.
    assert elapsed > 5.0


def test_a_call_made_while_the_server_restarts_succeeds_once(api, worker, smtp_sink):
    with MailroomClient(api.target) as client:
        api.stop()
        calling = threading.Event()
        result: dict[str, object] = {}

        def call() -> None:
            calling.set()
            try:
                result["id"] = client.send_email("alice@example.com", "restart", "c", timeout=15)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        assert calling.wait(5)
        api.start()  # returns once the API answers health checks
        thread.join(20)
        assert not thread.is_alive()
        assert "error" not in result, result
        email_id = result["id"]
        assert client.wait_for_delivery(email_id, timeout=30).status is EmailStatus.SENT
    assert len(_messages_for(smtp_sink, email_id)) == 1
    assert len(smtp_sink.messages) == 1


def test_the_async_client_sends_concurrently(api, worker, smtp_sink):
    recipients = [f"user{i}@example.com" for i in range(3)]

    async def scenario() -> list[mailroom.Email]:
        async with AsyncMailroomClient(api.target) as client:
            ids = await asyncio.gather(*(client.send_email(r, "async", "c") for r in recipients))
            return list(
                await asyncio.gather(*(client.wait_for_delivery(i, timeout=30) for i in ids))
            )

    emails = asyncio.run(scenario())
    assert [e.status for e in emails] == [EmailStatus.SENT] * 3
    assert sorted(e.to[0] for e in emails) == recipients
    smtp_sink.wait_for_count(3, timeout=10)


def _unique_tag() -> str:
    """A tag no other test (or earlier run on the same store) uses, to list only this test's."""
    return f"sdk-{uuid.uuid4().hex[:12]}"


def test_an_attachment_tags_metadata_and_a_header_reach_the_recipient(
    api, worker, smtp_sink, tmp_path
):
    report = tmp_path / "report.csv"
    report.write_bytes(b"id,total\n1,9.90\n")
    tag = _unique_tag()
    with MailroomClient(api.target) as client:
        email_id = client.send_email(
            "alice@example.com",
            "Your report",
            "The report is attached.",
            attachments=[Attachment.from_path(report)],
            headers={"X-Campaign": "spring"},
            tags=[tag, "reports"],
            metadata={"user_id": "42"},
        )
        email = client.wait_for_delivery(email_id, timeout=60)
    assert email.status is EmailStatus.SENT
    [attachment] = email.attachments
    assert (attachment.filename, attachment.content_type) == ("report.csv", "text/csv")
    assert (attachment.size, attachment.content) == (16, b"id,total\n1,9.90\n")
    assert email.headers == {"X-Campaign": "spring"}
    assert sorted(email.tags) == sorted([tag, "reports"])
    assert email.metadata == {"user_id": "42"}
    assert email.purge_time is None
    smtp_sink.wait_for_count(1, timeout=10)
    [received] = _messages_for(smtp_sink, email_id)
    assert received.message["X-Campaign"] == "spring"
    [part] = list(received.message.iter_attachments())
    assert part.get_filename() == "report.csv"
    assert part.get_content_type() == "text/csv"
    assert part.get_payload(decode=True) == b"id,total\n1,9.90\n"


def test_list_emails_follows_the_pages_in_both_clients(api):
    tag = _unique_tag()
    with MailroomClient(api.target) as client:
        # Oldest first: the listing answers newest first.
        ids = [
            client.send_email(
                f"u{i}@example.com", f"#{i}", "body", tags=tag, metadata={"n": str(i)}
            )
            for i in range(5)
        ]
        listed = list(client.list_emails(tag=tag, page_size=2))
        first = client.list_emails_page(tag=tag, page_size=2)
        second = client.list_emails_page(tag=tag, page_size=2, page_token=first.next_page_token)
        [by_metadata] = client.list_emails(tag=tag, metadata={"n": "3"}, full=True)
    assert [e.id for e in listed] == ids[::-1]
    assert [e.title for e in listed] == [f"#{i}" for i in reversed(range(5))]
    assert all(e.tags == [tag] and e.content == "" for e in listed)  # basic view: no bodies
    assert [e.id for e in first.emails + second.emails] == ids[:0:-1]
    assert first.next_page_token is not None
    assert (by_metadata.id, by_metadata.content) == (ids[3], "body")

    async def scenario() -> list[str]:
        async with AsyncMailroomClient(api.target) as client:
            return [e.id async for e in client.list_emails(tag=tag, page_size=2)]

    assert asyncio.run(scenario()) == ids[::-1]


def test_a_batch_with_one_invalid_email_sends_the_others(api, worker, smtp_sink):
    tag = _unique_tag()
    batch = [
        OutgoingEmail("alice@example.com", "batch 0", "c", tags=tag),
        OutgoingEmail("not-an-address", "batch 1", "c", tags=tag),
        OutgoingEmail(
            "bob@example.com",
            "batch 2",
            "c",
            tags=tag,
            attachments=[Attachment("notes.txt", b"hello", content_type="text/plain")],
        ),
    ]
    with MailroomClient(api.target) as client:
        response = client.send_email_batch(batch)
        assert (response.accepted_count, response.refused_count) == (2, 1)
        assert [r.accepted for r in response] == [True, False, True]
        error = response[1].error
        assert isinstance(error, mailroom.InvalidArgument)
        assert "emails[1].to[0]" in [v.field for v in error.violations]
        sent = [client.wait_for_delivery(r.id, timeout=60) for r in response.accepted]
    assert [e.status for e in sent] == [EmailStatus.SENT] * 2
    assert [e.title for e in sent] == ["batch 0", "batch 2"]
    smtp_sink.wait_for_count(2, timeout=10)
    [received] = _messages_for(smtp_sink, response[2].id)
    [part] = list(received.message.iter_attachments())
    assert part.get_payload(decode=True) == b"hello"


def test_a_batch_with_no_valid_email_raises_invalid_argument(api):
    batch = [
        OutgoingEmail("not-an-address", "t", "c"),
        OutgoingEmail("alice@example.com", "t", "c", attachments=[Attachment("run.exe", b"MZ")]),
    ]

    async def scenario() -> mailroom.InvalidArgument:
        async with AsyncMailroomClient(api.target) as client:
            with pytest.raises(mailroom.InvalidArgument) as info:
                await client.send_email_batch(batch)
            return info.value

    fields = [v.field for v in asyncio.run(scenario()).violations]
    assert "emails[0].to[0]" in fields
    assert "emails[1].attachments[0].filename" in fields


def _first_python_block(text: str) -> str:
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "sdk/README.md has no python code block"
    return match.group(1)


def test_the_readme_quick_start_runs_as_printed(api, worker, smtp_sink, tmp_path):
    code = _first_python_block((SDK / "README.md").read_text())
    assert len(code.strip().splitlines()) <= 5
    script = tmp_path / "quick_start.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env_for(api),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SENT"
    [received] = smtp_sink.wait_for_count(1, timeout=10)
    assert received.rcpt_tos == ["alice@example.com"]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("send_sync.py", ["alice@example.com"], 1),
        ("send_async.py", ["alice@example.com", "bob@example.com"], 2),
        ("batch_and_list.py", ["alice@example.com", "bob@example.com"], 2),
    ],
)
def test_the_examples_run(api, worker, smtp_sink, tmp_path, script, args, expected):
    done = subprocess.run(
        [sys.executable, str(SDK / "examples" / script), *args],
        env=_env_for(api),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SENT" in done.stdout
    smtp_sink.wait_for_count(expected, timeout=10)
