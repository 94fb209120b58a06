"""A worker's Prometheus metrics, scraped from its exposition server."""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2

DELAYED = re.compile(r"^dramatiq_delayed_messages_inprogress\{(.*)\} (\S+)$", re.MULTILINE)


def delayed_gauge(port: int) -> dict[str, float]:
    """``dramatiq_delayed_messages_inprogress`` by its labels (pid included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return {labels: float(value) for labels, value in DELAYED.findall(text)}


def test_a_scheduled_email_leaves_the_delayed_gauge_at_zero(mail_client, start_worker):
    """Dramatiq's own middleware read -1 under queue "mail" (and +1 under "mail.DQ") after it."""
    port = free_port()
    start_worker(MAILROOM_METRICS_PORT=str(port))
    send_at = timestamp_pb2.Timestamp()
    send_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    request = mail_pb2.SendEmailRequest(
        to=["a@example.com"], title="later", content="c", send_at=send_at
    )
    email_id = mail_client.SendEmail(request, timeout=10).id
    # Held in the worker's memory until its time: counted in.
    wait_until(
        lambda: any(v == 1 for v in delayed_gauge(port).values()),
        timeout=20,
        message="the delayed message is counted",
        ignore=(OSError,),
    )
    wait_until(
        lambda: (
            mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=5).email.status
            == mail_pb2.EmailStatus.EMAIL_STATUS_SENT
        ),
        timeout=30,
        message="the scheduled email is sent",
    )
    # Counted out under the label it was counted in with; nothing negative anywhere.
    wait_until(
        lambda: set(delayed_gauge(port).values()) == {0.0},
        timeout=10,
        message="the delayed gauge is back at 0 under every label",
    )
