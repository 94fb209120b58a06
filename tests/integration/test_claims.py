"""Exclusive state changes on the real database (FerretDB here; MongoDB when configured).

FerretDB 1.24 does not make conditional updates atomic, so these races are the reason for
EmailTurn: each test makes many threads contend at the same moment and expects one winner.
"""

import threading
from collections import Counter

import mongoengine
import pytest
from bson import ObjectId

from core.errors import Aborted, FailedPrecondition
from core.events_out import publish_safely
from core.settings import Settings
from core.store import repository, turns
from core.store.carried import carry, unpack
from core.store.connection import connect
from core.store.documents import Attempt, Status, utcnow
from core.store.webhooks import (
    WebhookSubscription,
    cache_subscriptions,
    subscriptions_for_events,
)
from helpers import CommandCounter, create_email
from workers.delivery import deliver
from workers.mta.base import SendResult
from workers.routing import Router
from workers.store import claims


def new_email() -> str:
    email = create_email(
        repository.NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@x.org"),
        message_id_domain="test",
    )
    return str(email.id)


class Recorder:
    """A provider that accepts every email and keeps it."""

    name = "smtp"

    def __init__(self):
        self.sent = []

    def send(self, email):
        self.sent.append(email)
        return SendResult(f"q{len(self.sent)}", "250 ok")


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, lease_seconds=30)


def race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def claim(email_id, owner, lease_seconds=60):
    """Read the email and take its claim, as a worker does."""
    email = claims.load_claimable(email_id)
    if email is None:
        return None
    return claims.claim(email, owner=owner, lease_seconds=lease_seconds)


@pytest.mark.parametrize("trial", range(5))
def test_one_of_many_concurrent_claims_wins(real_store, trial):
    email_id = new_email()
    results, errors = race(8, lambda i: claim(email_id, f"w{i}"))
    assert errors == []
    winners = [r for r in results if isinstance(r, claims.Claim)]
    assert len(winners) == 1
    # The others see the winner's live claim, and wait for it rather than drop the message.
    assert all(isinstance(r, claims.Held) for r in results if r is not winners[0])
    assert turns.get_email_as_seen(email_id).status == Status.SENDING
    sent = claims.record_sent(
        winners[0],
        Attempt(provider="smtp", started_at=utcnow(), outcome="DELIVERED"),
        provider_message_id="q1",
    )
    assert sent
    assert turns.get_email_as_seen(email_id).status == Status.SENT


def assert_one_winner(email_id, results, errors):
    """One claim or cancel won the race, and the email shows it (SENDING or CANCELLED)."""
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    expected = Status.SENDING if isinstance(winners[0], claims.Claim) else Status.CANCELLED
    assert turns.get_email_as_seen(email_id).status == expected


@pytest.mark.parametrize("trial", range(5))
def test_cancel_and_claim_race_has_one_winner(real_store, trial):
    email_id = new_email()

    def contend(i):
        if i % 2:
            taken = claim(email_id, f"w{i}")
            return taken if isinstance(taken, claims.Claim) else None
        try:
            return turns.cancel_email(email_id)
        except (FailedPrecondition, Aborted):  # lost to the claim, or to another cancel
            return None

    assert_one_winner(email_id, *race(6, contend))


def test_cancels_racing_a_worker_get_one_answer_each_never_an_error(real_store):
    """A worker claims and sends while three cancels race it (60 trials, 4 at once).

    Each cancel either wins (CANCELLED, nothing sent), or is refused: FAILED_PRECONDITION when
    the worker won ("already being sent", or the final status), ABORTED when another cancel is
    between its turn and its write. Nothing else escapes: no storage error, no 500.
    """
    outcomes = Counter()
    for _ in range(60):
        email_id = new_email()

        def contend(i, email_id=email_id):
            if i == 0:
                taken = claim(email_id, "w")
                if not isinstance(taken, claims.Claim):
                    return ("claim lost", "")
                attempt = Attempt(provider="smtp", started_at=utcnow(), outcome="DELIVERED")
                assert claims.record_sent(taken, attempt, provider_message_id="q")
                return ("sent", "")
            try:
                return ("cancelled", turns.cancel_email(email_id).status)
            except (FailedPrecondition, Aborted) as exc:
                return (type(exc).__name__, exc.message)

        results, errors = race(4, contend)
        assert errors == []
        kinds = [kind for kind, _ in results]
        outcomes.update(kinds)
        final = repository.get_email(email_id).status
        if "sent" in kinds:  # the worker won: every cancel refused, as being sent or sent
            assert final == Status.SENT
            assert "cancelled" not in kinds
            for kind, message in results[1:]:
                assert kind == "FailedPrecondition", message
                assert "already being sent" in message or "is SENT" in message, message
        else:  # one cancel won; the others saw it, or met it between its turn and its write
            assert final == Status.CANCELLED
            assert kinds.count("cancelled") == 1
            assert results[kinds.index("cancelled")][1] == Status.CANCELLED
            for kind, message in results[1:]:
                if kind == "FailedPrecondition":
                    assert "is CANCELLED" in message, message
    # Both sides won some trials (a race that one side always wins would test nothing).
    assert outcomes["sent"] and outcomes["cancelled"], outcomes


def test_an_expired_lease_is_taken_over_once(real_store):
    email_id = new_email()
    assert isinstance(claim(email_id, "dead", lease_seconds=-1), claims.Claim)
    results, _ = race(6, lambda i: claim(email_id, f"w{i}"))
    winners = [r for r in results if isinstance(r, claims.Claim)]
    assert len(winners) == 1
    assert winners[0].interrupted is not None
    assert winners[0].interrupted.worker == "dead"
    claims.record_failed_attempt(winners[0], None, status=Status.RETRYING, error="x")
    attempts = repository.get_email(email_id).attempts
    assert [a.outcome for a in attempts] == ["INTERRUPTED"]


def test_a_first_attempt_costs_three_store_round_trips(real_store, mongo_uri):
    """Read the email, insert the claim, write SENT: counted by a pymongo command listener."""
    email_id = new_email()
    commands = CommandCounter()
    mongoengine.disconnect()
    mongoengine.connect(host=mongo_uri, event_listeners=[commands], tz_aware=False)
    try:
        email = claims.load_claimable(email_id)
        held = claims.claim(email, owner="w", lease_seconds=60)
        claims.record_sent(
            held,
            Attempt(provider="smtp", started_at=utcnow(), outcome="DELIVERED"),
            provider_message_id="q1",
        )
    finally:
        connect(mongo_uri, timeout_ms=5000)
    assert commands.names == ["find", "insert", "update"]
    assert repository.get_email(email_id).status == Status.SENT


def test_the_sent_events_share_one_read_of_the_webhook_subscriptions(real_store, mongo_uri):
    """Five first attempts, each with its email.sent event: 3 round trips each, and one more."""
    WebhookSubscription.objects.delete()  # no subscriber: nothing to store or enqueue
    email_ids = [new_email() for _ in range(5)]
    commands = CommandCounter()
    mongoengine.disconnect()
    cache_subscriptions(60.0)  # what an entry point's connect() sets
    mongoengine.connect(host=mongo_uri, event_listeners=[commands], tz_aware=False)
    try:
        for email_id in email_ids:
            email = claims.load_claimable(email_id)
            held = claims.claim(email, owner="w", lease_seconds=60)
            assert claims.record_sent(
                held,
                Attempt(provider="smtp", started_at=utcnow(), outcome="DELIVERED"),
                provider_message_id="q1",
            )
            assert publish_safely(
                email_id, "email.sent", {"provider": "smtp"}, occurred_at=utcnow()
            )
    finally:
        connect(mongo_uri, timeout_ms=5000)  # and no copy of the list any more
    assert Counter(commands.names) == {"find": 5 + 1, "insert": 5, "update": 5}


# The email carried in its delivery message (core.store.carried) stands in for the read.


def new_carried_email() -> tuple[str, str]:
    """Store a new email as the API does; return its id and the copy its message carries."""
    document = repository.new_email_document(
        repository.NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@x.org"),
        message_id_domain="test",
        email_id=ObjectId(),
        now=utcnow(),
    )
    stored = carry(document)
    repository.insert_email(document)
    assert stored is not None
    return str(document["_id"]), stored


def claim_carried(email_id, stored, owner):
    """Take the claim from the carried copy, as a worker does before it would read."""
    email = unpack(stored, email_id, utcnow())
    assert email is not None
    return claims.claim(email, owner=owner, lease_seconds=60, as_read=False)


def test_the_carried_email_is_the_stored_one(real_store):
    email_id, stored = new_carried_email()
    unpacked = unpack(stored, email_id, utcnow())
    read = repository.find_email(email_id)
    assert unpacked is not None and read is not None
    assert unpacked.to_mongo().to_dict() == read.to_mongo().to_dict()


def test_a_first_attempt_from_the_carried_email_costs_two_store_round_trips(
    real_store, mongo_uri, settings
):
    """Insert the claim, write SENT: no read, whole deliveries counted by a command listener."""
    WebhookSubscription.objects.delete()
    carried = [new_carried_email() for _ in range(3)]
    smtp = Recorder()
    router = Router({"smtp": smtp}, ["smtp"])
    commands = CommandCounter()
    mongoengine.disconnect()
    cache_subscriptions(60.0)
    mongoengine.connect(host=mongo_uri, event_listeners=[commands], tz_aware=False)
    try:
        subscriptions_for_events()  # the webhook subscriptions, read once a minute
        commands.names.clear()
        for email_id, stored in carried:
            assert deliver(email_id, settings=settings, router=router, stored=stored) == "SENT"
    finally:
        connect(mongo_uri, timeout_ms=5000)
    assert commands.names == ["insert", "update"] * 3
    assert len(smtp.sent) == 3
    assert {repository.get_email(i).status for i, _ in carried} == {Status.SENT}


@pytest.mark.parametrize("trial", range(5))
def test_carried_and_read_claims_and_cancels_race_with_one_winner(real_store, trial):
    """The API's message (carried), a rescan's (read) and cancels, all at the same moment."""
    email_id, stored = new_carried_email()

    def contend(i):
        if i % 3 == 0:
            taken = claim_carried(email_id, stored, f"carried{i}")
        elif i % 3 == 1:
            taken = claim(email_id, f"read{i}")
        else:
            try:
                return turns.cancel_email(email_id)
            except (FailedPrecondition, Aborted):
                return None
        return taken if isinstance(taken, claims.Claim) else None

    assert_one_winner(email_id, *race(6, contend))
