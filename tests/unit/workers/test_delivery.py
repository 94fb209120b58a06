"""The delivery logic against an in-memory store and scripted providers."""

import time
from datetime import timedelta

import pytest

from core.store import repository, turns
from core.store.carried import MAX_AGE, carry
from core.store.documents import Email, Status, utcnow
from helpers import create_email
from workers.delivery import RetryDelivery, backoff_ms, dead_letter, deliver
from workers.mta.base import (
    MisconfiguredError,
    PermanentError,
    SendResult,
    ThrottledError,
    TransientError,
)
from workers.routing import Router
from workers.store import claims, dead_letters


class ScriptedProvider:
    """Answers each send with the next scripted outcome (an exception or a SendResult)."""

    def __init__(self, name, *outcomes):
        self.name = name
        self.outcomes = list(outcomes)
        self.sent = []

    def send(self, email):
        self.sent.append(email)
        outcome = self.outcomes.pop(0) if self.outcomes else SendResult("ok-id", "250 ok")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def new_email(**kw) -> Email:
    fields = dict(to=["a@example.com"], subject="Hi", text="body", from_address="f@example.com")
    fields.update(kw)
    return create_email(repository.NewEmail(**fields), message_id_domain="test")


def test_sent_records_one_attempt(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp", SendResult("q-1", "250 2.0.0 queued as q-1"))
    assert (
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
        == Status.SENT
    )
    stored = repository.get_email(str(email.id))
    assert stored.status == Status.SENT
    assert stored.provider_message_id == "q-1"
    assert [a.outcome for a in stored.attempts] == ["DELIVERED"]
    assert stored.attempts[0].response == "250 2.0.0 queued as q-1"
    assert stored.last_turn == 1


def test_duplicate_message_sends_once(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp")
    router = Router({"smtp": smtp}, ["smtp"])
    deliver(str(email.id), settings=settings, router=router)
    assert deliver(str(email.id), settings=settings, router=router) is None
    assert len(smtp.sent) == 1


def hold(email_id, owner="w1", lease_seconds=60):
    """Take a claim as another worker would (and then never write its outcome)."""
    return claims.claim(claims.load_claimable(email_id), owner=owner, lease_seconds=lease_seconds)


def test_live_lease_blocks_a_second_worker(fake_store, settings):
    email = new_email()
    started = time.monotonic()
    claim = hold(str(email.id))
    assert isinstance(claim, claims.Claim)
    assert turns.get_email_as_seen(str(email.id)).status == Status.SENDING
    smtp = ScriptedProvider("smtp")
    with pytest.raises(RetryDelivery) as info:
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
    elapsed_ms = (time.monotonic() - started) * 1000
    # Retried once the holder's lease runs out (in case it died), without spending retries:
    # the 60 s lease less the time that passed here, plus a second (a few ms of rounding).
    assert 61_000 - elapsed_ms - 5 <= info.value.delay <= 61_500
    assert not info.value.exhausted
    assert smtp.sent == []


def test_error_before_sending_frees_the_email_at_once(fake_store, settings, monkeypatch):
    email = new_email()

    def broken(_email):
        raise RuntimeError("mime bug")

    monkeypatch.setattr("workers.delivery.build_outgoing", broken)
    smtp = ScriptedProvider("smtp")
    with pytest.raises(RuntimeError):
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
    stored = turns.get_email_as_seen(str(email.id))
    assert stored.status == Status.RETRYING
    assert "mime bug" in stored.last_error
    monkeypatch.undo()
    # Not held until the lease runs out: the next attempt sends at once.
    assert deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"])) == (
        Status.SENT
    )


def test_waiting_for_a_provider_spends_no_retries_and_keeps_one_entry(fake_store, settings):
    email = new_email()
    a = ScriptedProvider("a", MisconfiguredError("401"))
    router = Router({"a": a}, ["a"])
    for _ in range(settings.retry.max_retries + 3):
        with pytest.raises(RetryDelivery) as info:
            deliver(str(email.id), settings=settings, router=router)
        assert not info.value.exhausted
    outcomes = [x.outcome for x in repository.get_email(str(email.id)).attempts]
    assert outcomes == ["MISCONFIGURED", "NO_PROVIDER"]


def test_an_email_waiting_past_the_cap_goes_to_the_dead_letters(fake_store, settings):
    email = new_email()
    Email.objects(id=email.id).update_one(set__created_at=utcnow() - timedelta(hours=25))
    smtp = ScriptedProvider("smtp")
    with pytest.raises(RetryDelivery) as info:
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
    assert info.value.exhausted
    assert smtp.sent == []
    assert dead_letter({"args": [str(email.id)]}, retries=0, max_retries=3) == Status.FAILED
    stored = repository.get_email(str(email.id))
    assert stored.status == Status.FAILED
    assert "gave up after 25" in stored.last_error


def test_dead_letter_record_is_written_on_a_retry(fake_store, settings):
    email = new_email()
    claims.fail_unclaimed(str(email.id), "retries exhausted after 4 attempts; last error: x")
    assert not dead_letters.has_dead_letter(str(email.id))
    assert dead_letter({"args": [str(email.id)]}, retries=3, max_retries=3) is None
    assert dead_letters.has_dead_letter(str(email.id))


def test_expired_lease_is_taken_over_and_recorded(fake_store, settings):
    email = new_email()
    hold(str(email.id), owner="dead-worker", lease_seconds=-1)
    smtp = ScriptedProvider("smtp")
    assert (
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
        == Status.SENT
    )
    stored = repository.get_email(str(email.id))
    assert [a.outcome for a in stored.attempts] == ["INTERRUPTED", "DELIVERED"]
    assert "dead-worker" in stored.attempts[0].error
    assert smtp.sent[0].message_id == stored.message_id


def test_transient_failure_retries_with_growing_backoff(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp", *[TransientError("451 try later")] * 4)
    router = Router({"smtp": smtp}, ["smtp"])
    delays = []
    for _ in range(settings.retry.max_retries + 1):
        with pytest.raises(RetryDelivery) as info:
            deliver(str(email.id), settings=settings, router=router)
        delays.append(info.value.delay)
        assert repository.get_email(str(email.id)).status == Status.RETRYING
    assert info.value.exhausted
    assert not any(d for d in delays[:-1] if d <= 0)
    assert backoff_ms(3, settings) >= settings.retry.min_backoff_ms * 2
    stored = repository.get_email(str(email.id))
    assert stored.attempt_count == settings.retry.max_retries + 1
    assert stored.last_error == "smtp: 451 try later"


def test_permanent_failure_fails_at_once(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp", PermanentError("550 no such user"))
    status = deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
    assert status == Status.FAILED
    stored = repository.get_email(str(email.id))
    assert stored.status == Status.FAILED
    assert "550 no such user" in stored.last_error
    assert [a.outcome for a in stored.attempts] == ["PERMANENT"]


def test_throttled_waits_at_least_retry_after(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp", ThrottledError("429", retry_after=7))
    with pytest.raises(RetryDelivery) as info:
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"]))
    assert info.value.delay >= 7000


def test_misconfigured_provider_moves_on(fake_store, settings):
    email = new_email()
    a = ScriptedProvider("a", MisconfiguredError("401 bad key"))
    b = ScriptedProvider("b")
    router = Router({"a": a, "b": b}, ["a", "b"])
    with pytest.raises(RetryDelivery) as info:
        deliver(str(email.id), settings=settings, router=router)
    assert not info.value.exhausted
    assert deliver(str(email.id), settings=settings, router=router) == Status.SENT
    assert repository.get_email(str(email.id)).provider == "b"


class SlowDown(ThrottledError):
    """A provider's own kind of throttling."""


class NoSuchUser(PermanentError):
    """A provider's own kind of permanent refusal."""


def test_a_delivery_error_subclass_is_recorded_and_handled_like_its_parent(fake_store, settings):
    email = new_email()
    smtp = ScriptedProvider("smtp", SlowDown("429", retry_after=7), NoSuchUser("550 no such user"))
    router = Router({"smtp": smtp}, ["smtp"])
    with pytest.raises(RetryDelivery) as info:
        deliver(str(email.id), settings=settings, router=router)
    assert info.value.delay >= 7000
    assert deliver(str(email.id), settings=settings, router=router) == Status.FAILED
    stored = repository.get_email(str(email.id))
    assert [a.outcome for a in stored.attempts] == ["THROTTLED", "PERMANENT"]


def test_scheduled_email_is_not_claimed_early(fake_store, settings):
    email = new_email(send_at=utcnow() + timedelta(hours=1))
    assert email.status == Status.SCHEDULED
    smtp = ScriptedProvider("smtp")
    assert (
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"])) is None
    )
    assert smtp.sent == []


def test_cancelled_email_is_never_sent(fake_store, settings):
    email = new_email()
    turns.cancel_email(str(email.id))
    smtp = ScriptedProvider("smtp")
    assert (
        deliver(str(email.id), settings=settings, router=Router({"smtp": smtp}, ["smtp"])) is None
    )
    assert repository.get_email(str(email.id)).status == Status.CANCELLED


# The email carried in its message (core.store.carried): the same outcome as a read, or a read.


def carried_email(**kw) -> tuple[Email, str]:
    """A stored email and the copy the API's message carries."""
    email = new_email(**kw)
    stored = carry(email.to_mongo().to_dict())
    assert stored is not None
    return email, stored


def test_a_carried_email_is_sent_like_a_read_one(fake_store, settings):
    email, stored = carried_email()
    smtp = ScriptedProvider("smtp", SendResult("q-1", "250 queued"))
    router = Router({"smtp": smtp}, ["smtp"])
    assert deliver(str(email.id), settings=settings, router=router, stored=stored) == Status.SENT
    final = repository.get_email(str(email.id))
    assert (final.status, final.last_turn, final.provider_message_id) == (Status.SENT, 1, "q-1")
    assert [a.outcome for a in final.attempts] == ["DELIVERED"]
    assert smtp.sent[0].message_id == final.message_id


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(turns.cancel_email, id="cancelled"),
        # The API answered 503 and voided the email; its insert landed after the void.
        pytest.param(turns.void_email, id="voided"),
    ],
)
def test_a_carried_copy_of_a_stopped_email_sends_nothing(fake_store, settings, stop):
    email, stored = carried_email()
    stop(str(email.id))
    smtp = ScriptedProvider("smtp")
    router = Router({"smtp": smtp}, ["smtp"])
    assert deliver(str(email.id), settings=settings, router=router, stored=stored) is None
    assert smtp.sent == []
    assert turns.get_email_as_seen(str(email.id)).status == Status.CANCELLED


def test_a_redelivered_carried_message_sends_once(fake_store, settings):
    email, stored = carried_email()
    smtp = ScriptedProvider("smtp")
    router = Router({"smtp": smtp}, ["smtp"])
    assert deliver(str(email.id), settings=settings, router=router, stored=stored) == Status.SENT
    assert deliver(str(email.id), settings=settings, router=router, stored=stored) is None
    assert len(smtp.sent) == 1


def test_a_retried_carried_message_reads_the_history_it_adds_to(fake_store, settings):
    """The copy is stale after the first attempt: the retry reads the email and counts it."""
    email, stored = carried_email()
    smtp = ScriptedProvider("smtp", TransientError("451 later"), TransientError("451 later"))
    router = Router({"smtp": smtp}, ["smtp"])
    delays = []
    for _ in range(2):
        with pytest.raises(RetryDelivery) as info:
            deliver(str(email.id), settings=settings, router=router, stored=stored)
        delays.append(info.value.delay)
    assert deliver(str(email.id), settings=settings, router=router, stored=stored) == Status.SENT
    final = repository.get_email(str(email.id))
    assert [a.outcome for a in final.attempts] == ["TRANSIENT", "TRANSIENT", "DELIVERED"]
    assert (final.attempt_count, final.last_turn) == (3, 3)
    # The second failure counted the first: its backoff (half fixed, half random) is from the
    # doubled ceiling, at least the minimum; a first failure's is at most the minimum.
    assert delays[0] <= settings.retry.min_backoff_ms <= delays[1]


def test_a_carried_email_held_by_a_live_claim_waits_for_it(fake_store, settings):
    email, stored = carried_email()
    assert isinstance(hold(str(email.id)), claims.Claim)
    smtp = ScriptedProvider("smtp")
    with pytest.raises(RetryDelivery) as info:
        deliver(
            str(email.id),
            settings=settings,
            router=Router({"smtp": smtp}, ["smtp"]),
            stored=stored,
        )
    assert info.value.delay > 50_000 and not info.value.exhausted
    assert smtp.sent == []


def test_an_old_carried_copy_is_read_again(fake_store, settings):
    """Past core.store.carried.MAX_AGE the copy is not trusted: the stored email decides."""
    email, stored = carried_email()
    Email.objects(id=email.id).update_one(set__subject="Changed in the store")
    smtp = ScriptedProvider("smtp")
    router = Router({"smtp": smtp}, ["smtp"])
    later = utcnow() + MAX_AGE + timedelta(seconds=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("workers.delivery.utcnow", lambda: later)
        assert deliver(str(email.id), settings=settings, router=router, stored=stored) == (
            Status.SENT
        )
    assert smtp.sent[0].subject == "Changed in the store"
