"""core.store.events and core.inbound_events on mongomock: dedupe, matching, the status rule."""

from __future__ import annotations

from datetime import datetime

import pytest
from bson import ObjectId

from core.inbound_events import ingest, ingest_one
from core.store.documents import Email, Status
from core.store.events import (
    EventType,
    ProviderEvent,
    StoredProviderEvent,
    find_email_id,
    record_event,
)
from core.store.repository import NewEmail, new_email_document
from core.store.suppressions import suppressed_among

NOW = datetime(2026, 12, 2, 12, 0, 0)


@pytest.fixture(params=["$in", "equalities"])
def lookups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of asking for an event's email: MongoDB's one $in, FerretDB's equalities."""
    from core.store import events

    monkeypatch.setattr(events, "is_ferretdb_v1", lambda database: request.param == "equalities")
    return str(request.param)


def _email(status: Status = Status.SENT, provider_message_id: str = "pm-1", to=None) -> str:
    new = NewEmail(
        to=to or ["ann@example.com", "bob@example.com"],
        subject="hi",
        text="hello",
        from_address="me@example.com",
    )
    oid = ObjectId()
    doc = new_email_document(new, message_id_domain="mailroom.test", email_id=oid, now=NOW)
    doc["status"] = status.value
    doc["provider_message_id"] = provider_message_id
    Email._get_collection().insert_one(doc)
    return str(oid)


def _event(kind: EventType, recipient="ann@example.com", *, event_id="e1", bounce="", **kw):
    return ProviderEvent(
        provider="postmark",
        type=kind,
        raw_type=kind.value.lower(),
        recipient=recipient,
        occurred_at=kw.pop("at", NOW),
        event_id=event_id,
        provider_message_ids=kw.pop("ids", ("pm-1",)),
        bounce_type=bounce,
        raw={"x": 1},
        **kw,
    )


def test_an_event_is_matched_by_the_provider_message_id_and_rolls_up(fake_store, lookups) -> None:
    email_id = _email()
    recorded = ingest_one(_event(EventType.DELIVERED))
    assert recorded.email_id == email_id and not recorded.duplicate
    email = Email.objects.get(id=email_id)
    assert email.status == Status.DELIVERED
    assert [(e.type, e.recipient) for e in email.events] == [("DELIVERED", "ann@example.com")]
    assert [(r.address, r.status) for r in email.recipient_statuses] == [
        ("ann@example.com", "DELIVERED")
    ]


def test_a_retried_event_is_recorded_once(fake_store) -> None:
    email_id = _email()
    first, again = ingest([_event(EventType.DELIVERED), _event(EventType.DELIVERED)])
    assert not first.duplicate and again.duplicate
    assert StoredProviderEvent.objects.count() == 1
    assert len(Email.objects.get(id=email_id).events) == 1


def test_events_without_ids_are_deduped_by_a_hash_of_the_event(fake_store) -> None:
    _email()
    a = _event(EventType.OPENED, event_id="")
    b = _event(EventType.OPENED, event_id="")
    c = _event(EventType.OPENED, "bob@example.com", event_id="")
    assert a.key == b.key != c.key
    assert [r.duplicate for r in ingest([a, b, c])] == [False, True, False]


def test_the_status_rule_complained_over_bounced_over_delivered(fake_store) -> None:
    email_id = _email()
    ingest_one(_event(EventType.DELIVERED, event_id="d1"))
    ingest_one(_event(EventType.BOUNCED, "bob@example.com", event_id="b1", bounce="soft"))
    email = Email.objects.get(id=email_id)
    # A soft bounce only defers its recipient; one delivered recipient makes it DELIVERED.
    assert email.status == Status.DELIVERED
    assert {r.address: r.status for r in email.recipient_statuses}["bob@example.com"] == "DEFERRED"
    ingest_one(_event(EventType.BOUNCED, "bob@example.com", event_id="b2", bounce="hard"))
    assert Email.objects.get(id=email_id).status == Status.BOUNCED
    ingest_one(_event(EventType.COMPLAINED, event_id="c1"))
    email = Email.objects.get(id=email_id)
    assert email.status == Status.COMPLAINED
    assert {r.address: r.status for r in email.recipient_statuses} == {
        "ann@example.com": "COMPLAINED",
        "bob@example.com": "BOUNCED",
    }


def test_hard_bounces_and_complaints_suppress_their_recipient(fake_store) -> None:
    _email()
    ingest_one(_event(EventType.BOUNCED, "bob@example.com", event_id="b", bounce="hard"))
    ingest_one(_event(EventType.BOUNCED, "ann@example.com", event_id="s", bounce="soft"))
    ingest_one(_event(EventType.COMPLAINED, "cy@example.com", event_id="c", ids=()))
    assert suppressed_among(["ann@example.com", "bob@example.com", "cy@example.com"]) == {
        "bob@example.com": "hard_bounce",
        "cy@example.com": "complaint",
    }


def test_unknown_events_are_kept_raw_and_never_applied(fake_store) -> None:
    email_id = _email()
    recorded = ingest_one(_event(EventType.UNKNOWN, event_id="u1"))
    assert recorded.email_id == email_id
    stored = StoredProviderEvent.objects.get(key="postmark:u1")
    assert stored.type == "UNKNOWN" and stored.raw == '{"x": 1}' and stored.processed
    email = Email.objects.get(id=email_id)
    assert email.status == Status.SENT and list(email.events) == []


def test_an_email_not_sent_yet_keeps_its_status_and_gets_its_events(fake_store) -> None:
    email_id = _email(Status.RETRYING)
    ingest_one(_event(EventType.DELIVERED))
    email = Email.objects.get(id=email_id)
    assert email.status == Status.RETRYING and len(email.events) == 1


@pytest.mark.parametrize("given", ["<{id}@mailroom.test>", "{id}@mailroom.test"])
def test_our_message_id_matches_with_or_without_brackets(fake_store, given, lookups) -> None:
    email_id = _email(provider_message_id="")
    event = _event(EventType.DELIVERED, ids=(), message_id=given.format(id=email_id))
    assert find_email_id(event) == email_id


def test_an_unmatched_event_is_stored_without_an_email(fake_store) -> None:
    _email()
    recorded = record_event(_event(EventType.DELIVERED, ids=("other",)))
    assert recorded.email_id == "" and StoredProviderEvent.objects.get(key="postmark:e1")


def test_a_half_processed_event_is_finished_by_its_retry(fake_store, monkeypatch) -> None:
    email_id = _email()
    import core.inbound_events as intake

    def broken(*_a, **_k):
        raise RuntimeError("store down")

    monkeypatch.setattr(intake.suppressions, "suppress", broken)
    event = _event(EventType.BOUNCED, event_id="b", bounce="hard")
    with pytest.raises(RuntimeError):
        ingest_one(event)
    monkeypatch.undo()
    retried = ingest_one(event)
    assert not retried.duplicate and retried.email_id == email_id
    assert suppressed_among(["ann@example.com"]) == {"ann@example.com": "hard_bounce"}
    assert ingest_one(event).duplicate


def test_each_stored_event_of_an_email_is_published_once(fake_store, monkeypatch) -> None:
    email_id = _email()
    import core.inbound_events as intake

    calls = []
    monkeypatch.setattr(
        intake.events_out, "publish", lambda *a, **k: calls.append((a, k["event_id"]))
    )
    event = _event(EventType.CLICKED, url="https://example.com/x")
    ingest([event, event, _event(EventType.UNKNOWN, event_id="u")])
    assert len(calls) == 1
    (published_id, event_type, data), _key = calls[0]
    assert (published_id, event_type) == (email_id, "email.clicked")
    assert data["url"] == "https://example.com/x" and data["provider"] == "postmark"


def test_an_event_before_the_provider_id_was_recorded_is_adopted_by_the_next(
    fake_store, monkeypatch, lookups
) -> None:
    import core.inbound_events as intake

    published = []
    monkeypatch.setattr(
        intake.events_out, "publish", lambda email_id, kind, *a, **k: published.append(kind)
    )
    email_id = _email(Status.QUEUED, provider_message_id="")
    early = ingest_one(_event(EventType.DELIVERED, event_id="early"))
    assert early.email_id == "" and published == []
    # The worker records SENT with the provider's id; the next event finds the email.
    Email.objects(id=email_id).update_one(set__status="SENT", set__provider_message_id="pm-1")
    later = ingest_one(_event(EventType.OPENED, event_id="later"))
    assert later.email_id == email_id
    assert [e.key for e in later.adopted] == ["postmark:early"]
    assert StoredProviderEvent.objects.get(key="postmark:early").email_id == email_id
    email = Email.objects.get(id=email_id)
    assert email.status == Status.DELIVERED and len(email.events) == 2
    assert sorted(published) == ["email.delivered", "email.opened"]
