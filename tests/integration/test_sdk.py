"""The Python SDK against the real API, worker and SMTP sink."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import mailroom
from mailroom import AsyncMailroomClient, AttemptOutcome, EmailStatus, MailroomClient

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
