"""The store's repository: the hand-built document, inserts, voids and the error mapping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId
from mongoengine import errors as mongoengine_errors
from pymongo import errors

from core.errors import (
    DuplicateKey,
    MailroomError,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.store import repository, turns
from core.store.documents import Email, Status, StoredAttachment, utcnow
from helpers import create_email
from workers.store import claims

FULL = repository.NewEmail(
    to=["a@example.com", "Bee <B@Example.com>"],
    cc=["c@example.com"],
    bcc=["d@example.com"],
    subject="Subject",
    text="Body",
    html="<p>Body</p>",
    from_address="Shop <shop@example.com>",
    reply_to="help@example.com",
    idempotency_key="order-1",
    attachments=[
        repository.NewAttachment("a.pdf", "application/pdf", b"%PDF-1.7", ""),
        repository.NewAttachment("logo.png", "image/png", b"\x89PNG", "logo"),
    ],
    headers={"X-Campaign": "spring"},
    tags=["welcome", "b2b"],
    metadata={"plan": "pro", "user": "42"},
)
MINIMAL = repository.NewEmail(
    to=["a@example.com"], subject="s", text="t", from_address="f@example.com"
)


@pytest.mark.parametrize("send_in", [None, timedelta(hours=1), -timedelta(hours=1)])
@pytest.mark.parametrize("new", [FULL, MINIMAL], ids=["full", "minimal"])
def test_new_email_document_is_what_the_mongoengine_document_stores(
    new: repository.NewEmail, send_in: timedelta | None
) -> None:
    now = utcnow()
    oid = ObjectId()
    send_at = now + send_in if send_in is not None else None
    new = repository.NewEmail(**{**new.__dict__, "send_at": send_at})
    scheduled = send_in is not None and send_in > timedelta(0)
    expected = Email(
        id=oid,
        status=Status.SCHEDULED if scheduled else Status.QUEUED,
        to=new.to,
        cc=new.cc,
        bcc=new.bcc,
        subject=new.subject,
        text=new.text,
        html=new.html,
        from_address=new.from_address,
        reply_to=new.reply_to,
        message_id=f"<{oid}@mail.test>",
        idempotency_key=new.idempotency_key or None,
        created_at=now,
        updated_at=now,
        send_at=send_at,
        attachments=[
            StoredAttachment(
                filename=a.filename,
                content_type=a.content_type,
                content=a.content,
                content_id=a.content_id,
                size=len(a.content),
            )
            for a in new.attachments
        ],
        headers=new.headers,
        tags=new.tags,
        metadata=new.metadata,
        recipients=sorted({repository.recipient_key(a) for a in new.to + new.cc + new.bcc}),
        metadata_pairs=[f"{k}={v}" for k, v in sorted(new.metadata.items())],
        list_buckets=repository.list_buckets(oid),
    )
    expected.validate()

    document = repository.new_email_document(
        new, message_id_domain="mail.test", email_id=oid, now=now
    )

    assert document == expected.to_mongo().to_dict()
    Email._from_son(document).validate()
    if new is FULL or new.tags:
        assert "b@example.com" in document["recipients"]


def test_a_second_insert_of_one_id_is_a_duplicate_key_and_stores_once(fake_store) -> None:
    oid = ObjectId()
    document = repository.new_email_document(
        FULL, message_id_domain="mail.test", email_id=oid, now=utcnow()
    )
    repository.insert_email(dict(document))
    with pytest.raises(DuplicateKey):
        repository.insert_email(dict(document))
    stored = Email.objects.get(id=oid)
    assert (stored.to, stored.bcc, stored.message_id) == (FULL.to, FULL.bcc, f"<{oid}@mail.test>")
    assert Email.objects.count() == 1


def test_a_voided_email_is_cancelled_and_never_claimed_even_when_it_lands_later(fake_store) -> None:
    early, late = ObjectId(), ObjectId()
    create_email(MINIMAL, message_id_domain="t", email_id=early)
    assert turns.void_email(str(early))
    assert repository.get_email(str(early)).status == Status.CANCELLED

    # The insert lands after the void: GetEmail shows it cancelled at once, and the claim
    # meets the void and writes that outcome.
    assert turns.void_email(str(late))
    create_email(MINIMAL, message_id_domain="t", email_id=late)
    assert repository.get_email(str(late)).status == Status.QUEUED
    seen = turns.get_email_as_seen(str(late))
    assert (seen.status, seen.last_error) == (Status.CANCELLED, turns.VOID_REASON)
    email = claims.load_claimable(str(late))
    assert email is not None
    assert claims.claim(email, owner="w", lease_seconds=60) is None
    stored = repository.get_email(str(late))
    assert stored.status == Status.CANCELLED
    assert "not accepted" in stored.last_error


def test_an_idempotent_retry_and_a_void_exclude_each_other(fake_store) -> None:
    voided, accepted = str(ObjectId()), str(ObjectId())
    assert turns.void_email(voided)
    assert turns.accept_email(voided) is None

    assert turns.accept_email(accepted) is True
    assert turns.accept_email(accepted) is False
    assert not turns.void_email(accepted)
    # The accept turn writes nothing: a worker skips it and claims the next turn.
    create_email(MINIMAL, message_id_domain="t", email_id=ObjectId(accepted))
    claim = claims.claim(claims.load_claimable(accepted), owner="w", lease_seconds=60)
    assert isinstance(claim, claims.Claim)
    assert claim.generation == 2


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (errors.DuplicateKeyError("E11000 duplicate key"), DuplicateKey),
        (errors.ServerSelectionTimeoutError("no servers"), StorageUnavailable),
        (errors.NetworkTimeout("timed out"), StorageOutcomeUnknown),
        (errors.AutoReconnect("connection reset"), StorageOutcomeUnknown),
        (errors.ExecutionTimeout("operation exceeded time limit"), StorageOutcomeUnknown),
        (errors.WTimeoutError("waiting for replication timed out"), StorageOutcomeUnknown),
        (errors.OperationFailure("unauthorized"), StorageUnavailable),
        (errors.PyMongoError("anything else"), StorageUnavailable),
        (mongoengine_errors.NotUniqueError("E11000 duplicate key error"), DuplicateKey),
        (mongoengine_errors.OperationError("could not save"), StorageUnavailable),
    ],
)
def test_every_driver_error_is_mapped_without_internal_details(raised, expected) -> None:
    with pytest.raises(expected) as info, repository.map_mongo_errors():
        raise raised
    assert type(info.value) is expected
    assert str(raised) not in info.value.message


def test_no_pymongo_error_class_escapes_unmapped() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.PyMongoError)
    ]
    assert len(classes) > 20
    for cls in classes:
        instance = _construct(cls)
        with pytest.raises(MailroomError), repository.map_mongo_errors():
            raise instance


def _construct(cls):
    """An instance of a pymongo error class, whatever its constructor wants."""
    for args in (("x",), ({},), ("x", {}), ("x", 1, {}), ({}, False)):
        try:
            return cls(*args)
        except (TypeError, AttributeError, KeyError):
            continue
    raise AssertionError(f"cannot construct {cls}")
