"""Exclusive state changes on the real database (FerretDB here; MongoDB when configured).

FerretDB 1.24 does not make conditional updates atomic, so these races are the reason for
EmailTurn: each test makes many threads contend at the same moment and expects one winner.
"""

import threading

import pytest

from server.errors import FailedPrecondition
from server.store import claims, repository
from server.store.documents import Status


def new_email() -> str:
    email = repository.create_email(
        repository.NewEmail(to=["a@example.com"], subject="s", text="t", from_address="f@x.org"),
        message_id_domain="test",
    )
    return str(email.id)


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


@pytest.mark.parametrize("trial", range(5))
def test_one_of_many_concurrent_claims_wins(store, trial):
    email_id = new_email()
    results, errors = race(
        8,
        lambda i: claims.claim_email(email_id, token=f"t{i}", owner=f"w{i}", lease_seconds=60),
    )
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = repository.get_email(email_id)
    assert stored.status == Status.SENDING
    assert stored.lease_token == winners[0].token


@pytest.mark.parametrize("trial", range(5))
def test_cancel_and_claim_race_has_one_winner(store, trial):
    email_id = new_email()

    def contend(i):
        if i % 2:
            return claims.claim_email(email_id, token=f"t{i}", owner=f"w{i}", lease_seconds=60)
        try:
            return repository.cancel_email(email_id)
        except FailedPrecondition:
            return None

    results, errors = race(6, contend)
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    expected = Status.SENDING if isinstance(winners[0], claims.Claim) else Status.CANCELLED
    assert repository.get_email(email_id).status == expected


def test_an_expired_lease_is_taken_over_once(store):
    email_id = new_email()
    assert claims.claim_email(email_id, token="dead", owner="dead", lease_seconds=-1)
    results, _ = race(
        6,
        lambda i: claims.claim_email(email_id, token=f"t{i}", owner=f"w{i}", lease_seconds=60),
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].interrupted
    attempts = repository.get_email(email_id).attempts
    assert [a.outcome for a in attempts] == ["INTERRUPTED"]
