"""Concurrent SendEmails share inserts (group commit) on the real store, each answered alone."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import mongoengine
from bson import ObjectId

from core.errors import AlreadyExists, DuplicateKey, MailroomError
from core.settings import Settings
from core.store import idempotency, repository
from core.store.connection import connect
from core.store.documents import Email, Status, utcnow
from helpers import CommandCounter, RecordingQueue, wait_until
from mailroom.v1 import mail_pb2
from server.servicer import MailServicer

# A budget far above the held write's pause: these tests are about grouping, not about budgets,
# and must pass on a loaded machine.
SETTINGS = Settings(_env_file=None, accept_timeout_ms=30_000)


class Context:
    def invocation_metadata(self):
        return ()

    def send_initial_metadata(self, metadata):
        self.metadata = metadata


def request(title: str) -> mail_pb2.SendEmailRequest:
    return mail_pb2.SendEmailRequest(to=["group@example.com"], title=title, content="x")


def test_sends_arriving_during_an_insert_share_the_next_one(real_store, mongo_uri, monkeypatch):
    """The first insert is held until 7 more SendEmails wait: they all go in one more insert."""
    servicer = MailServicer(SETTINGS, RecordingQueue())  # type: ignore[arg-type]
    release = threading.Event()
    first_write = threading.Event()
    real_group = repository.insert_email_group

    def held_first(documents):
        if not first_write.is_set():
            first_write.set()
            assert release.wait(10)
        return real_group(documents)

    monkeypatch.setattr(repository, "insert_email_group", held_first)
    commands = CommandCounter()
    mongoengine.disconnect()
    mongoengine.connect(host=mongo_uri, event_listeners=[commands], tz_aware=False)
    titles = [f"group {ObjectId()} {i}" for i in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(servicer.SendEmail, request(titles[0]), Context())
            assert first_write.wait(10)
            rest = [pool.submit(servicer.SendEmail, request(t), Context()) for t in titles[1:]]
            wait_until(lambda: len(servicer._inserts._queue) == 7, timeout=10, message="7 waiting")
            release.set()
            replies = [first.result(10), *(f.result(10) for f in rest)]
    finally:
        servicer.close()
        connect(mongo_uri, timeout_ms=5000)
    assert Counter(commands.names)["insert"] == 2
    assert len({r.id for r in replies}) == 8
    for title, reply in zip(titles, replies, strict=True):
        email = repository.get_email(reply.id)
        assert (email.subject, email.status) == (title, Status.QUEUED)
    assert sorted(servicer._queue.ids) == sorted(r.id for r in replies)  # type: ignore[attr-defined]


def test_keyed_sends_arriving_during_a_key_write_share_the_next_one(
    real_store, mongo_uri, monkeypatch
):
    """Idempotency keys are bound in groups too, each call still answered as if alone."""
    servicer = MailServicer(SETTINGS, RecordingQueue())  # type: ignore[arg-type]
    release = threading.Event()
    first_write = threading.Event()
    real_reserve = idempotency.reserve_idempotency_keys

    def held_first(entries, *, ttl):
        if not first_write.is_set():
            first_write.set()
            assert release.wait(10)
        return real_reserve(entries, ttl=ttl)

    monkeypatch.setattr(idempotency, "reserve_idempotency_keys", held_first)
    run = ObjectId()
    # Six keys of their own, one key sent twice with the same email, and that key reused
    # with another email: the eight others wait behind the first call's key.
    calls = [(f"k{run}-{i}", f"keyed {run} {i}") for i in range(6)]
    calls += [(f"k{run}-twice", f"twice {run}")] * 2 + [(f"k{run}-twice", f"other {run}")]
    commands = CommandCounter()
    mongoengine.disconnect()
    mongoengine.connect(host=mongo_uri, event_listeners=[commands], tz_aware=False)

    def send(key: str, title: str):
        metadata = (("idempotency-key", key),)
        context = Context()
        context.invocation_metadata = lambda: metadata
        try:
            return servicer.SendEmail(request(title), context).id
        except MailroomError as exc:
            return exc

    try:
        with ThreadPoolExecutor(9) as pool:
            first = pool.submit(send, *calls[0])
            assert first_write.wait(10)
            rest = [pool.submit(send, *call) for call in calls[1:]]
            wait_until(
                lambda: len(servicer._reservations._queue) == 8, timeout=10, message="8 waiting"
            )
            release.set()
            answers = [first.result(10), *(f.result(10) for f in rest)]
    finally:
        servicer.close()
        connect(mongo_uri, timeout_ms=5000)
    assert Counter(commands.targets)[("insert", "idempotency_keys")] == 2
    own, twice, other = answers[:6], answers[6:8], answers[8]
    assert all(isinstance(a, str) for a in own) and len(set(own)) == 6
    for (_, title), email_id in zip(calls[:6], own, strict=True):
        assert repository.get_email(email_id).subject == title
    # The three calls sharing a key queue in no fixed order: whichever payload binds it first
    # wins; the same payload again gets the same id, the other payload ALREADY_EXISTS.
    if isinstance(other, str):
        winner, loser = f"other {run}", f"twice {run}"
        assert all(isinstance(a, AlreadyExists) and "twice" in a.message for a in twice)
    else:
        winner, loser = f"twice {run}", f"other {run}"
        assert isinstance(twice[0], str) and twice[0] == twice[1]
        assert isinstance(other, AlreadyExists) and "twice" in other.message
    assert Email.objects(subject=winner).count() == 1
    assert Email.objects(subject=loser).count() == 0


def test_an_id_already_stored_fails_only_its_own_document(real_store):
    """FerretDB and MongoDB report the duplicate by its index; the others are stored."""
    taken = ObjectId()
    now = utcnow()
    new = repository.NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@x.org")

    def document(email_id: ObjectId) -> dict[str, object]:
        return repository.new_email_document(
            new, message_id_domain="test", email_id=email_id, now=now
        )

    repository.insert_email(document(taken))
    ids = [ObjectId(), taken, ObjectId()]
    fates = repository.insert_email_group([document(i) for i in ids])
    assert fates[0] is None and fates[2] is None
    assert isinstance(fates[1], DuplicateKey)
    assert Email.objects(id__in=ids).count() == 3


def test_concurrent_sends_through_the_api_are_each_sent_once(mail_client, worker, smtp_sink):
    """24 SendEmails at once against the real API process: 24 ids, 24 messages, none twice."""
    titles = [f"together {ObjectId()} {i}" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda t: mail_client.SendEmail(request(t), timeout=10), titles))
    ids = [r.id for r in replies]
    assert len(set(ids)) == 24

    def delivered() -> Counter[str]:
        return Counter(str(m.message["X-Mailroom-Id"]) for m in smtp_sink.messages)

    wait_until(
        lambda: all(delivered()[i] >= 1 for i in ids), timeout=60, message="all 24 delivered"
    )
    by_id = {str(m.message["X-Mailroom-Id"]): str(m.message["Subject"]) for m in smtp_sink.messages}
    assert [by_id[i] for i in ids] == titles
    assert all(delivered()[i] == 1 for i in ids)
