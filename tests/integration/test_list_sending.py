"""ListEmails' SENDING end to end: a worker inside a slow SMTP transaction, seen over REST and gRPC.

The real API (behind Envoy), a real worker and the SMTP sink made slow: while the worker holds
its claim the email is listed by ``status=SENDING``, left out of ``status=QUEUED`` and shown
SENDING; once sent, it is SENT and no longer SENDING, and the sink received it once.
"""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

from helpers import wait_until
from mailroom.v1 import mail_pb2

SLOW_SECONDS = 6


def rest_emails(envoy, **params: object) -> list[dict]:
    query = urllib.parse.urlencode(params, doseq=True)
    status, _headers, body = envoy.request("GET", f"/api/emails?{query}", timeout=30)
    assert status == 200, body
    return list(body.get("emails", []))


@pytest.mark.usefixtures("real_store")
def test_an_email_being_delivered_is_listed_as_sending_and_sent_once(
    envoy, worker, smtp_sink, mail_client
) -> None:
    tag = f"s-{uuid.uuid4().hex[:12]}"
    smtp_sink.delay(SLOW_SECONDS)
    try:
        status, _headers, reply = envoy.request(
            "POST",
            "/api/email",
            {"to": ["alice@example.com"], "title": "Slow", "content": "Hi", "tags": [tag]},
        )
        assert status == 201, reply
        email_id = reply["id"]

        def sending() -> list[dict]:
            return rest_emails(envoy, tag=tag, status="EMAIL_STATUS_SENDING")

        [listed] = wait_until(sending, timeout=30, interval=0.1, message="listed as SENDING")
        assert listed["id"] == email_id
        assert listed["status"] == "EMAIL_STATUS_SENDING"
        assert listed["provider"] == "smtp"
        # While the worker is inside DATA the email is not QUEUED, and any list shows SENDING.
        assert rest_emails(envoy, tag=tag, status="EMAIL_STATUS_QUEUED") == []
        [shown] = rest_emails(envoy, tag=tag)
        assert shown["status"] == "EMAIL_STATUS_SENDING"
        request = mail_pb2.ListEmailsRequest(tag=tag, status=[mail_pb2.EMAIL_STATUS_SENDING])
        reply_pb = mail_client.ListEmails(request, timeout=30)
        assert [e.id for e in reply_pb.emails] == [email_id]
        assert reply_pb.emails[0].status == mail_pb2.EMAIL_STATUS_SENDING
    finally:
        smtp_sink.delay(0)

    wait_until(
        lambda: (
            [e["id"] for e in rest_emails(envoy, tag=tag, status="EMAIL_STATUS_SENT")] == [email_id]
        ),
        timeout=60,
        interval=0.2,
        message="listed as SENT",
    )
    assert rest_emails(envoy, tag=tag, status="EMAIL_STATUS_SENDING") == []
    message_id = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id)).email.message_id
    delivered = [m for m in smtp_sink.messages if m.message["Message-ID"] == message_id]
    assert len(delivered) == 1
