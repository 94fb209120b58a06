"""The email a delivery message carries: the same email a read would give, or nothing."""

from __future__ import annotations

import base64
from datetime import timedelta

from bson import ObjectId

from core.store import repository
from core.store.carried import MAX_AGE, MAX_CARRIED_BYTES, carry, unpack
from core.store.documents import utcnow


def document(**kw: object) -> dict[str, object]:
    fields: dict[str, object] = dict(
        to=["a@example.com"], subject="Hi", text="body", from_address="f@example.com"
    )
    fields.update(kw)
    return repository.new_email_document(
        repository.NewEmail(**fields),  # type: ignore[arg-type]
        message_id_domain="test",
        email_id=ObjectId(),
        now=utcnow(),
    )


def test_the_carried_email_is_the_email_a_read_returns(fake_store):
    doc = document(
        cc=["c@example.com"],
        html="<p>body</p>",
        headers={"X-Campaign": "spring"},
        tags=["receipt"],
        metadata={"order": "42"},
        attachments=[repository.NewAttachment("a.txt", "text/plain", b"\x00\xffdata")],
    )
    carried = carry(doc)
    repository.insert_email(doc)
    email_id = str(doc["_id"])
    read = repository.find_email(email_id)
    unpacked = unpack(carried or "", email_id, utcnow())
    assert unpacked is not None and read is not None
    assert unpacked.to_mongo().to_dict() == read.to_mongo().to_dict()
    assert unpacked.attachments[0].content == b"\x00\xffdata"


def test_a_large_email_is_not_carried():
    big = "x" * MAX_CARRIED_BYTES
    assert carry(document(text=big)) is None
    assert carry(document(text="small")) is not None


def test_only_an_email_as_inserted_is_carried():
    doc = document()
    doc["claim_generation"] = 1
    assert carry(doc) is None


def test_a_copy_of_another_email_is_not_used():
    carried = carry(document())
    assert carried is not None
    assert unpack(carried, str(ObjectId()), utcnow()) is None


def test_an_old_copy_or_one_from_a_clock_far_ahead_is_not_used():
    doc = document()
    carried = carry(doc)
    assert carried is not None
    created = doc["created_at"]
    assert isinstance(created, type(utcnow()))
    email_id = str(doc["_id"])
    assert unpack(carried, email_id, created + MAX_AGE - timedelta(seconds=1)) is not None
    assert unpack(carried, email_id, created + MAX_AGE + timedelta(seconds=1)) is None
    assert unpack(carried, email_id, created - MAX_AGE - timedelta(seconds=1)) is None


def test_a_malformed_copy_is_not_used():
    email_id = str(ObjectId())
    for junk in ("", "not base64!", base64.b64encode(b"\x05\x00\x00\x00").decode(), "AAAA"):
        assert unpack(junk, email_id, utcnow()) is None
