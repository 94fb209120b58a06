"""SendEmailBatch's answers, email by email (mongomock, a recording queue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2

from core.errors import (
    AlreadyExists,
    InvalidArgument,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.store import idempotency, repository, turns
from core.store.documents import Email, EmailTurn, IdempotencyKey
from helpers import RecordingQueue, wait_until
from mailroom.v1 import mail_pb2
from server.servicer import MailServicer, successor_id


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.incoming = metadata
        self.sent: tuple[tuple[str, str], ...] | None = None

    def invocation_metadata(self):
        return self.incoming

    def send_initial_metadata(self, metadata):
        self.sent = metadata


def email(to: str = "a@example.com", title: str = "t", **fields) -> mail_pb2.SendEmailRequest:
    return mail_pb2.SendEmailRequest(to=[to], title=title, content="c", **fields)


def batch(*emails: mail_pb2.SendEmailRequest) -> mail_pb2.SendEmailBatchRequest:
    return mail_pb2.SendEmailBatchRequest(emails=list(emails))


def violations(status) -> list[str]:
    [detail] = status.details
    bad = error_details_pb2.BadRequest()
    detail.Unpack(bad)
    return [v.field for v in bad.field_violations]


@pytest.fixture
def servicer(settings, fake_store):
    made = MailServicer(settings, RecordingQueue())  # type: ignore[arg-type]
    yield made
    made.close()


def test_valid_emails_are_stored_and_enqueued_at_once_and_invalid_ones_named(servicer):
    emails = [email(f"r{i}@example.com") for i in range(5)]
    emails.insert(1, email("not an address"))
    emails.insert(4, email(title=""))
    context = Context()

    reply = servicer.SendEmailBatch(batch(*emails), context)

    assert (reply.accepted_count, reply.refused_count) == (5, 2)
    ids = [r.id for r in reply.results]
    assert [bool(i) for i in ids] == [True, False, True, True, False, True, True]
    assert violations(reply.results[1].error) == ["emails[1].to[0]"]
    assert reply.results[1].error.code == code_pb2.INVALID_ARGUMENT
    assert violations(reply.results[4].error) == ["emails[4].title"]
    stored = {str(e.id): e.to for e in Email.objects()}
    assert stored == {i: [emails[n].to[0]] for n, i in enumerate(ids) if i}
    # One enqueue call for all five, in order; no 201 marker (the call answers 200).
    assert servicer._queue.batches == [[(i, None) for i in ids if i]]
    assert context.sent is None


def test_no_valid_email_fails_the_call_with_every_violation(servicer):
    with pytest.raises(InvalidArgument) as info:
        servicer.SendEmailBatch(batch(email("x"), email(title="")), Context())

    assert [v.field for v in info.value.violations] == ["emails[0].to[0]", "emails[1].title"]
    assert Email.objects().count() == 0


@pytest.mark.parametrize("count", [0, 101])
def test_an_empty_or_oversized_batch_is_refused_naming_emails(servicer, count):
    with pytest.raises(InvalidArgument) as info:
        servicer.SendEmailBatch(batch(*[email() for _ in range(count)]), Context())

    assert [v.field for v in info.value.violations] == ["emails"]
    assert Email.objects().count() == 0


def test_a_call_wide_idempotency_key_is_refused(servicer):
    with pytest.raises(InvalidArgument) as info:
        servicer.SendEmailBatch(batch(email()), Context((("idempotency-key", "k"),)))

    assert [v.field for v in info.value.violations] == ["idempotency_key"]


def test_a_retried_item_gets_its_first_id_and_a_changed_one_already_exists(servicer):
    first = servicer.SendEmailBatch(batch(email(idempotency_key="k1"), email()), Context())

    again = servicer.SendEmailBatch(
        batch(email(idempotency_key="k1"), email(title="other", idempotency_key="k1")), Context()
    )

    assert again.results[0].id == first.results[0].id
    assert again.results[1].error.code == code_pb2.ALREADY_EXISTS
    assert again.results[1].error.message.startswith("emails[1]: idempotency key 'k1'")
    assert Email.objects(idempotency_key="k1").count() == 1
    assert Email.objects().count() == 2


def test_items_sharing_a_key_in_one_batch_are_one_email(servicer):
    reply = servicer.SendEmailBatch(
        batch(
            email(idempotency_key="k"),
            email(idempotency_key="k"),
            email(title="other", idempotency_key="k"),
        ),
        Context(),
    )

    assert reply.results[0].id == reply.results[1].id
    assert reply.results[2].error.code == code_pb2.ALREADY_EXISTS
    assert (reply.accepted_count, reply.refused_count) == (2, 1)
    assert Email.objects().count() == 1
    assert servicer._queue.batches == [[(reply.results[0].id, None)]]


def test_a_scheduled_email_is_enqueued_with_its_delay(servicer):
    send_at = Timestamp()
    send_at.FromDatetime(datetime.now(UTC) + timedelta(hours=1))

    servicer.SendEmailBatch(batch(email(send_at=send_at), email()), Context())

    [[(_, delay), (_, none)]] = servicer._queue.batches
    assert 3_500_000 < delay <= 3_600_000
    assert none is None


def test_a_sender_outside_the_allowed_domains_is_refused_per_email(settings, fake_store):
    settings.allowed_from_domains = ["example.com"]
    servicer = MailServicer(settings, RecordingQueue())  # type: ignore[arg-type]
    try:
        reply = servicer.SendEmailBatch(
            batch(email(from_address="x@example.org"), email(from_address="x@example.com")),
            Context(),
        )
    finally:
        servicer.close()

    assert reply.results[0].error.code == code_pb2.PERMISSION_DENIED
    assert reply.results[0].error.message.startswith("emails[0].from: ")
    assert reply.results[1].id


def test_a_document_the_store_refuses_is_refused_alone(servicer, monkeypatch):
    real = repository.insert_emails

    def refuse_the_second(documents):
        real(documents[:1] + documents[2:])
        return repository.BulkInsert(refused=frozenset({1}))

    monkeypatch.setattr(repository, "insert_emails", refuse_the_second)

    reply = servicer.SendEmailBatch(batch(email(), email(), email()), Context())

    assert reply.results[1].error.code == code_pb2.INTERNAL
    assert (reply.accepted_count, reply.refused_count) == (2, 1)
    assert Email.objects().count() == 2
    assert [i for i, _ in servicer._queue.batches[0]] == [reply.results[0].id, reply.results[2].id]


def test_an_unconfirmed_bulk_write_is_resolved_per_email(servicer, monkeypatch):
    def land_the_first_only(documents):
        Email._get_collection().insert_one(documents[0])
        raise StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")

    monkeypatch.setattr(repository, "insert_emails", land_the_first_only)

    reply = servicer.SendEmailBatch(batch(email(), email()), Context())

    assert reply.results[0].id
    assert reply.results[1].error.code == code_pb2.INTERNAL  # voided: never sent
    assert [t.purpose for t in EmailTurn.objects()] == ["void"]
    assert servicer._queue.batches == [[(reply.results[0].id, None)]]


def test_an_unconfirmed_bulk_write_of_which_nothing_landed_fails_the_call(servicer, monkeypatch):
    def lose(documents):
        raise StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")

    monkeypatch.setattr(repository, "insert_emails", lose)

    with pytest.raises(StorageUnavailable):
        servicer.SendEmailBatch(batch(email(), email(title="")), Context())

    assert EmailTurn.objects().count() == 1
    assert servicer._queue.batches == []


def test_a_failed_bulk_enqueue_goes_to_the_backlog_email_by_email(servicer):
    servicer._queue.fail = True

    reply = servicer.SendEmailBatch(batch(email(), email()), Context())

    assert reply.accepted_count == 2
    servicer._queue.fail = False
    wait_until(
        lambda: sorted(servicer._queue.singles) == sorted(r.id for r in reply.results),
        timeout=30,
        message="both enqueued once Redis is back",
    )


def test_the_bulk_insert_counts_an_existing_id_as_stored(fake_store):
    new = repository.NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@x.org")
    documents = [
        repository.new_email_document(
            new, message_id_domain="test", email_id=ObjectId(), now=datetime(2026, 1, 1)
        )
        for _ in range(3)
    ]
    repository.insert_email(dict(documents[1]))

    assert repository.insert_emails(documents) == repository.BulkInsert(existing=frozenset({1}))
    assert Email.objects().count() == 3


# -- the bulk writes the batch uses ------------------------------------------------------------


def test_bulk_key_reservation_answers_each_key_as_the_one_key_way_does(fake_store):
    ttl = timedelta(hours=1)
    idempotency.reserve_idempotency_key("same", "f", "id-same", ttl=ttl)
    idempotency.reserve_idempotency_key("changed", "f", "id-changed", ttl=ttl)
    idempotency.reserve_idempotency_key("expired", "f", "id-old", ttl=timedelta(seconds=-1))

    outcomes = idempotency.reserve_idempotency_keys(
        [("new", "f", "a"), ("same", "f", "b"), ("changed", "g", "c"), ("expired", "f", "d")],
        ttl=ttl,
    )

    assert outcomes[:2] == [None, "id-same"]
    assert isinstance(outcomes[2], AlreadyExists)
    assert outcomes[3] is None  # an expired key is free again
    assert IdempotencyKey.objects(key="expired").first().email_id == "d"
    assert IdempotencyKey.objects(key="new").first().email_id == "a"


def test_bulk_accept_answers_each_email_as_accept_email_does(fake_store):
    new, void, taken = (str(ObjectId()) for _ in range(3))
    turns.void_email(void)
    turns.accept_email(taken)

    assert turns.accept_emails([new, void, taken]) == [True, None, False]
    assert EmailTurn.objects(key=f"{new}:1").first().purpose == "accept"


def test_a_retried_item_whose_first_email_was_voided_is_stored_under_its_successor(servicer):
    request = batch(email(idempotency_key="kv"), email())
    first = servicer.SendEmailBatch(request, Context())
    voided = first.results[0].id
    Email.objects(id=voided).delete()  # as if its insert never landed, then voided
    assert turns.void_email(voided)

    again = servicer.SendEmailBatch(request, Context())

    assert again.results[0].id == str(successor_id(ObjectId(voided)))
    assert Email.objects(id=again.results[0].id).count() == 1
    assert again.results[0].id in [i for i, _ in servicer._queue.batches[-1]]


def test_a_failed_read_of_taken_keys_leaves_the_other_keys_bound_and_answered(
    fake_store, monkeypatch
):
    """The bulk insert bound the new keys; only the taken one is unknown (a retry decides)."""
    from pymongo.errors import AutoReconnect

    from core.errors import StorageOutcomeUnknown

    ttl = timedelta(hours=1)
    idempotency.reserve_idempotency_key("taken", "f", "id-first", ttl=ttl)

    def store_gone(*args, **kwargs):
        raise AutoReconnect("connection reset")

    monkeypatch.setattr(IdempotencyKey, "objects", store_gone)
    outcomes = idempotency.reserve_idempotency_keys(
        [("new-1", "f", "a"), ("taken", "f", "b"), ("new-2", "f", "c")], ttl=ttl
    )
    monkeypatch.undo()

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StorageOutcomeUnknown)
    assert IdempotencyKey.objects(key="new-1").first().email_id == "a"
    assert IdempotencyKey.objects(key="new-2").first().email_id == "c"
    assert IdempotencyKey.objects(key="taken").first().email_id == "id-first"


def test_a_group_write_gets_the_latest_deadline_of_its_calls_not_the_leaders(servicer, monkeypatch):
    """The leader's own pymongo.timeout is nearly spent; the group's write is not bound by it."""
    import time

    import pymongo
    from pymongo import _csot

    seen: list[float | None] = []

    def record(documents):
        seen.append(_csot.remaining())
        return [None] * len(documents)

    monkeypatch.setattr(repository, "insert_email_group", record)
    now = time.monotonic()
    with pymongo.timeout(0.01):
        assert servicer._insert_emails([({"_id": 1}, now + 0.01), ({"_id": 2}, now + 5.0)]) == [
            None,
            None,
        ]
    [remaining] = seen
    assert remaining is not None and 4.0 < remaining <= 5.0
