"""What an answer means when the store stalls: 201 is sent once, 500 and 503 are never sent.

The store (FerretDB) is paused with SIGSTOP while a SendEmail waits on it; its insert may still
land after the answer, when the store resumes. Each test then lets a worker and a rescan run over
everything and checks the SMTP sink.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid

import grpc
import pytest

from core.queue import DeliveryQueue
from core.store import repository
from core.store.documents import Email, EmailTurn, Status
from helpers import wait_until
from mailroom.v1 import mail_pb2

pytestmark = pytest.mark.skipif(
    "MAILROOM_TEST_MONGODB_URI" in os.environ,
    reason="the external MongoDB cannot be paused by the tests",
)


@pytest.fixture
def queue(redis_server):
    """Enqueues deliver messages, as a rescan would."""
    delivery = DeliveryQueue(redis_server.url, "mail", timeout_seconds=5)
    yield delivery
    delivery.close()


def send(mail_client, title, *, key="", timeout=10.0):
    """SendEmail; return (status code, id or message)."""
    request = mail_pb2.SendEmailRequest(
        to=["outage@example.com"], title=title, content="x", idempotency_key=key
    )
    try:
        return grpc.StatusCode.OK, mail_client.SendEmail(request, timeout=timeout).id
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


class Paused:
    """SIGSTOP the store while the block runs; SIGCONT it afterwards, whatever happens."""

    def __init__(self, process):
        self.pid = process.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)


def refused_id(detail):
    """The email id a 503 names."""
    return re.search(r"email ([0-9a-f]{24}) was not accepted", detail).group(1)


def void_in_place(email_id):
    """The API has taken the email's first turn as ``void``: no claim can send it."""
    turn = EmailTurn.objects(key=f"{email_id}:1").first()
    return turn is not None and turn.purpose == "void"


def shown_status(mail_client, email_id):
    """The status GetEmail answers, or None when the email was never stored."""
    try:
        email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
        return None
    return mail_pb2.EmailStatus.Name(email.status)


def stored_cancelled_or_absent(email_id):
    """The stored document, if its insert landed, has the CANCELLED outcome written."""
    email = Email.objects(id=email_id).first()
    return email is None or email.status == Status.CANCELLED


def deliver_everything(start_worker, queue, titles):
    """Run a worker, and enqueue every stored email of ``titles`` as a rescan would."""
    start_worker()
    for title in titles:
        for email in Email.objects(subject=title):
            queue.enqueue_delivery(str(email.id))

    def all_final():
        return all(
            e.status in (Status.SENT, Status.FAILED, Status.CANCELLED)
            for t in titles
            for e in Email.objects(subject=t)
        )

    wait_until(all_final, timeout=60, message="every stored email is final")


def received(smtp_sink, title):
    return [m for m in smtp_sink.messages if m.message["Subject"] == title]


def test_a_stalled_store_answers_503_and_the_email_is_never_sent(
    mail_client, mongo_server, real_store, smtp_sink, start_worker, queue
):
    title = f"stalled-{uuid.uuid4().hex}"
    with Paused(mongo_server):
        code, detail = send(mail_client, title)
    assert code == grpc.StatusCode.UNAVAILABLE, detail
    assert "retrying with the same idempotency key is safe" in detail
    email_id = refused_id(detail)

    # The insert lands once the store resumes, or never (it may land after the void's write);
    # either way the API voids the email, and GetEmail never shows it waiting to be sent.
    wait_until(lambda: void_in_place(email_id), timeout=30, message="the email is voided")
    assert shown_status(mail_client, email_id) in (None, "EMAIL_STATUS_CANCELLED")
    # Even a delivery message for it (a rescan) sends nothing; a claim writes CANCELLED.
    deliver_everything(start_worker, queue, [title])
    queue.enqueue_delivery(email_id)
    wait_until(lambda: queue_drained(queue), timeout=30, message="the messages are consumed")
    assert received(smtp_sink, title) == []
    assert stored_cancelled_or_absent(email_id)
    assert shown_status(mail_client, email_id) in (None, "EMAIL_STATUS_CANCELLED")


def queue_drained(queue):
    client = queue.broker.client
    return client.llen("dramatiq:mail") == 0 and client.hlen("dramatiq:mail.msgs") == 0


def test_a_keyed_retry_after_503_is_sent_exactly_once(
    mail_client, mongo_server, real_store, smtp_sink, start_worker, queue
):
    title = f"retried-{uuid.uuid4().hex}"
    key = f"key-{uuid.uuid4().hex}"
    with Paused(mongo_server):
        code, detail = send(mail_client, title, key=key)
    assert code == grpc.StatusCode.UNAVAILABLE, detail

    code, email_id = send(mail_client, title, key=key)
    assert code == grpc.StatusCode.OK, email_id
    again_code, again_id = send(mail_client, title, key=key)
    assert (again_code, again_id) == (grpc.StatusCode.OK, email_id)

    deliver_everything(start_worker, queue, [title])
    [message] = received(smtp_sink, title)
    assert message.message["X-Mailroom-Id"] == email_id
    assert repository.get_email(email_id).status == Status.SENT


def test_sends_racing_a_stall_end_sent_once_when_201_and_never_when_not(
    mail_client, mongo_server, real_store, smtp_sink, start_worker, queue
):
    """Sends in flight while the store pauses and resumes get every kind of answer."""
    titles = [f"race-{n}-{uuid.uuid4().hex}" for n in range(12)]
    answers = {}
    started = threading.Barrier(len(titles) + 1)

    def one(title):
        started.wait()
        answers[title] = send(mail_client, title)

    threads = [threading.Thread(target=one, args=(t,)) for t in titles]
    for thread in threads:
        thread.start()
    with Paused(mongo_server):
        started.wait()
        # A fault, not a wait for readiness: resume within the accept budget (2.5 s), while
        # some inserts wait, some lookups run and some answers are being decided.
        threading.Event().wait(1.8)
    for thread in threads:
        thread.join(30)
    assert len(answers) == len(titles)

    def voids_done():
        return all(
            code != grpc.StatusCode.UNAVAILABLE or void_in_place(refused_id(detail))
            for code, detail in answers.values()
        )

    wait_until(voids_done, timeout=30, message="every unconfirmed email is voided")
    deliver_everything(start_worker, queue, titles)
    wait_until(lambda: queue_drained(queue), timeout=30, message="the messages are consumed")
    for title, (code, detail) in answers.items():
        got = received(smtp_sink, title)
        if code == grpc.StatusCode.OK:
            assert [m.message["X-Mailroom-Id"] for m in got] == [detail], title
        else:
            assert code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE), detail
            assert got == [], f"{title} answered {code.name} but was sent"
            if code == grpc.StatusCode.UNAVAILABLE:
                shown = shown_status(mail_client, refused_id(detail))
                assert shown in (None, "EMAIL_STATUS_CANCELLED"), title
