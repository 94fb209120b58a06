"""SendEmail's answer when the store's insert outcome is unknown, branch by branch (mongomock)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import NotAccepted, StorageOutcomeUnknown, StorageUnavailable
from core.store import repository, turns
from core.store.carried import unpack
from core.store.documents import Email, EmailTurn, Status, utcnow
from helpers import RecordingQueue, wait_until
from mailroom.v1 import mail_pb2
from server.servicer import MailServicer


class Context:
    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self):
        return ()

    def send_initial_metadata(self, metadata):
        self.metadata = metadata


REQUEST = mail_pb2.SendEmailRequest(to=["a@example.com"], title="t", content="c")


@pytest.fixture
def make(settings):
    made = []

    def build(queue: RecordingQueue | None = None) -> tuple[MailServicer, RecordingQueue]:
        q = queue or RecordingQueue()
        servicer = MailServicer(settings, q)  # type: ignore[arg-type]
        made.append(servicer)
        return servicer, q

    yield build
    for servicer in made:
        servicer.close()


def insert_then_lose_the_answer(documents):
    Email._get_collection().insert_many(documents)
    raise StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")


def lose_the_insert(documents):
    raise StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")


def test_the_message_carries_the_email_stored_unless_it_is_scheduled(fake_store, make):
    servicer, queue = make()
    now_reply = servicer.SendEmail(REQUEST, Context())
    later = mail_pb2.SendEmailRequest()
    later.CopyFrom(REQUEST)
    later.send_at.FromDatetime(utcnow() + timedelta(hours=1))
    later_reply = servicer.SendEmail(later, Context())
    assert queue.ids == [now_reply.id, later_reply.id]
    carried = unpack(queue.stored[now_reply.id], now_reply.id, utcnow())
    stored = Email.objects(id=now_reply.id).first()
    assert carried is not None
    assert carried.to_mongo().to_dict() == stored.to_mongo().to_dict()
    assert later_reply.id not in queue.stored


def test_an_unconfirmed_insert_that_landed_is_accepted_and_enqueued(fake_store, make, monkeypatch):
    monkeypatch.setattr(repository, "insert_email_group", insert_then_lose_the_answer)
    servicer, queue = make()
    context = Context()
    reply = servicer.SendEmail(REQUEST, context)
    assert queue.ids == [reply.id]
    assert context.metadata == (("x-http-status", "201"),)
    assert Email.objects(id=reply.id).first().status == Status.QUEUED


def test_an_unconfirmed_insert_not_found_is_voided_and_answered_500(fake_store, make, monkeypatch):
    monkeypatch.setattr(repository, "insert_email_group", lose_the_insert)
    servicer, queue = make()
    with pytest.raises(StorageUnavailable) as info:
        servicer.SendEmail(REQUEST, Context())
    assert not isinstance(info.value, NotAccepted)
    assert queue.ids == []
    [turn] = EmailTurn.objects()
    assert turn.purpose == "void"


def test_an_unresolvable_insert_is_503_and_voided_in_the_background(fake_store, make, monkeypatch):
    monkeypatch.setattr(repository, "insert_email_group", lose_the_insert)
    store_down = True

    def void_when_back(email_id):
        if store_down:
            raise StorageUnavailable("storage unavailable (ServerSelectionTimeoutError)")
        return real_void(email_id)

    real_void = turns.void_email
    monkeypatch.setattr(turns, "void_email", void_when_back)
    monkeypatch.setattr(repository, "find_email", lambda _id: void_when_back(_id))
    servicer, queue = make()
    with pytest.raises(NotAccepted) as info:
        servicer.SendEmail(REQUEST, Context())
    email_id = info.value.message.split()[1]
    assert queue.ids == []
    assert len(servicer.voids) == 1
    store_down = False
    servicer.voids.add(email_id)  # wakes the backlog at once
    wait_until(lambda: len(servicer.voids) == 0, timeout=10, message="void done")
    assert EmailTurn.objects(key=f"{email_id}:1").first().purpose == "void"


def test_an_enqueue_that_fails_is_retried_until_redis_answers(fake_store, make):
    queue = RecordingQueue(fail=True)
    servicer, _ = make(queue)
    reply = servicer.SendEmail(REQUEST, Context())
    assert queue.ids == []
    assert len(servicer.enqueues) == 1
    queue.fail = False
    wait_until(lambda: queue.ids == [reply.id], timeout=10, message="enqueued once Redis is back")
    assert len(servicer.enqueues) == 0
