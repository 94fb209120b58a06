"""ListEmails' SENDING: emails a live claim holds, found from the claim (no stored status)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from core.store import repository
from core.store.documents import Email, EmailTurn, utcnow
from core.store.listing import EmailFilter, list_page
from core.store.turn_taking import TurnPurpose, TurnTaken, acquire_turn, lease_key, lease_keys

pytestmark = pytest.mark.usefixtures("fake_store")


def store(status: str = "QUEUED", tag: str = "t") -> ObjectId:
    oid = ObjectId()
    new = repository.NewEmail(
        to=["to@example.com"], subject="s", text="body", from_address="a@example.com", tags=[tag]
    )
    document = repository.new_email_document(
        new, message_id_domain="test", email_id=oid, now=utcnow()
    )
    document["status"] = status
    repository.insert_email(document)
    return oid


def claim(oid: ObjectId, *, provider: str = "ses", lease: float = 60) -> int:
    email = Email.objects.get(id=oid)
    taken = acquire_turn(
        email,
        TurnPurpose.CLAIM,
        owner="w1",
        expires_at=utcnow() + timedelta(seconds=lease),
        provider=provider,
    )
    assert isinstance(taken, TurnTaken)
    return taken.generation


def listed(*statuses: str, bucketed: bool | None = None, page_size: int = 10) -> list[tuple]:
    page = list_page(
        EmailFilter.of(statuses=statuses, tag="t"), page_size=page_size, bucketed=bucketed
    )
    return [(e.id, e.status, e.provider) for e in page.emails]


@pytest.mark.parametrize("bucketed", [False, True])
def test_sending_lists_the_emails_a_live_claim_holds_and_queued_leaves_them_out(
    bucketed: bool,
) -> None:
    queued, held, sent = store(), store(), store("SENT")
    claim(held)
    assert listed("SENDING", bucketed=bucketed) == [(held, "SENDING", "ses")]
    assert listed("QUEUED", bucketed=bucketed) == [(queued, "QUEUED", "")]
    assert listed("QUEUED", "SENDING", bucketed=bucketed) == [
        (held, "SENDING", "ses"),
        (queued, "QUEUED", ""),
    ]
    assert listed("SENT", "SENDING", bucketed=bucketed) == [
        (sent, "SENT", ""),
        (held, "SENDING", "ses"),
    ]
    # Without a status filter every email is listed, the held one as GetEmail shows it.
    assert listed(bucketed=bucketed) == [
        (sent, "SENT", ""),
        (held, "SENDING", "ses"),
        (queued, "QUEUED", ""),
    ]
    # Other filters still apply to the held emails.
    page = list_page(EmailFilter.of(statuses=["SENDING"], tag="other"), page_size=10)
    assert page.emails == []


def test_an_email_whose_outcome_is_written_is_not_sending_while_the_lease_runs() -> None:
    held = store()
    generation = claim(held)
    Email._get_collection().update_one(
        {"_id": held}, {"$set": {"status": "RETRYING", "claim_generation": generation}}
    )
    assert listed("SENDING") == []
    assert listed("RETRYING") == [(held, "RETRYING", "")]


def test_an_expired_claim_is_not_sending() -> None:
    held = store()
    now = utcnow()
    EmailTurn._get_collection().insert_one(
        {
            "_id": f"{held}:1",
            "email_id": str(held),
            "purpose": "claim",
            "owner": "w1",
            "created_at": now - timedelta(seconds=120),
            "expires_at": now - timedelta(milliseconds=1),
            "list_buckets": [lease_key(now)],
        }
    )
    assert listed("SENDING") == []
    assert listed("QUEUED") == [(held, "QUEUED", "")]


def test_sending_pages_with_tokens() -> None:
    held = [store() for _ in range(3)]
    for oid in held:
        claim(oid)
    seen: list[ObjectId] = []
    email_filter = EmailFilter.of(statuses=["SENDING"], tag="t")
    token = ""
    while True:
        page = list_page(email_filter, page_size=2, page_token=token)
        seen += [e.id for e in page.emails]
        token = page.next_page_token
        if not token:
            break
    assert seen == held[::-1]


def test_a_claim_turn_carries_every_minute_of_its_lease() -> None:
    held = store()
    claim(held, lease=150)
    turn = EmailTurn._get_collection().find_one({"_id": f"{held}:1"})
    assert turn["list_buckets"] == lease_keys(turn["created_at"], turn["expires_at"])
    assert 3 <= len(turn["list_buckets"]) <= 4
    assert lease_key(utcnow()) in turn["list_buckets"]
    # A turn without a lease (a cancel, a purge) carries none.
    other = store()
    taken = acquire_turn(Email.objects.get(id=other), TurnPurpose.CANCEL)
    assert isinstance(taken, TurnTaken)
    assert "list_buckets" not in EmailTurn._get_collection().find_one({"_id": f"{other}:1"})
