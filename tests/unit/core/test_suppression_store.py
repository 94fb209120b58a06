"""The suppression list in the store (mongomock): add once, look up many in one query, page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import InvalidArgument
from core.store import suppressions
from core.store.suppressions import (
    Suppression,
    get_suppression,
    list_suppressions,
    suppress,
    suppressed_among,
    unsuppress,
)


@pytest.fixture(autouse=True)
def _store(fake_store: None) -> None:
    Suppression.drop_collection()


def test_suppress_is_idempotent_and_keeps_the_first_entry() -> None:
    assert suppress("Bob <Bob@Example.com>", "hard_bounce", provider="ses", event_id="e1") is True
    assert suppress("bob@example.com", "complaint") is False
    entry = get_suppression("BOB@example.com")
    assert entry is not None
    assert (entry.address, entry.reason, entry.provider, entry.event_id) == (
        "bob@example.com",
        "hard_bounce",
        "ses",
        "e1",
    )


@pytest.mark.parametrize(("address", "reason"), [("", "manual"), ("a@b.c", "bored")])
def test_suppress_refuses_an_empty_address_or_an_unknown_reason(address: str, reason: str) -> None:
    with pytest.raises(ValueError):
        suppress(address, reason)


def test_suppressed_among_answers_the_addresses_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    suppress("a@x.com", "manual")
    suppress("c@x.com", "complaint")
    collection = Suppression._get_collection()
    calls: list[object] = []
    real = type(collection).find

    def find(self: object, query: object, *args: object, **kwargs: object) -> object:
        calls.append(query)
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(type(collection), "find", find)
    found = suppressed_among(["A <A@X.com>", "b@x.com", "c@x.com", "a@x.com", ""])
    assert found == {"A <A@X.com>": "manual", "a@x.com": "manual", "c@x.com": "complaint"}
    assert len(calls) == 1


def test_suppressed_among_nothing_asks_nothing() -> None:
    assert suppressed_among([]) == {}


def test_unsuppress_says_whether_the_address_was_there() -> None:
    suppress("a@x.com", "manual")
    assert unsuppress("A@X.com") is True
    assert unsuppress("a@x.com") is False
    assert suppressed_among(["a@x.com"]) == {}


def test_pages_walk_newest_first_each_entry_once() -> None:
    for i in range(7):
        suppress(f"u{i}@x.com", "hard_bounce" if i % 2 else "manual")
    # Same millisecond for some: the address breaks the tie.
    base = Suppression.objects.first().created_at
    for i, entry in enumerate(Suppression.objects.order_by("address")):
        entry.update(created_at=base + timedelta(milliseconds=i // 2))
    seen: list[str] = []
    token = ""
    while True:
        page, token = list_suppressions(page_size=3, page_token=token)
        assert len(page) <= 3
        seen += [e.address for e in page]
        if not token:
            break
    assert seen == [e.address for e in Suppression.objects.order_by("-created_at", "-address")]
    assert len(set(seen)) == 7
    bounced, token = list_suppressions(reason="hard_bounce", page_size=10)
    assert {e.reason for e in bounced} == {"hard_bounce"} and len(bounced) == 3 and token == ""


def test_a_token_is_bound_to_its_reason_filter_and_checked() -> None:
    for i in range(3):
        suppress(f"u{i}@x.com", "manual")
    _, token = list_suppressions(page_size=1)
    with pytest.raises(InvalidArgument) as caught:
        list_suppressions(reason="manual", page_size=1, page_token=token)
    assert caught.value.violations[0].field == "page_token"
    for bad in ("garbage!", "e30", token[:-3]):
        with pytest.raises(InvalidArgument):
            list_suppressions(page_size=1, page_token=bad)


def test_reasons_are_the_documented_ones() -> None:
    assert suppressions.REASONS == ("hard_bounce", "complaint", "manual", "unsubscribe")


@pytest.mark.parametrize("count", [2, 9])
def test_on_ferretdb_each_address_is_one_equality_query(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(suppressions, "store_sorts_in_memory", lambda: True)
    for i in range(0, count, 2):
        suppress(f"u{i}@x.com", "manual")
    queries: list[object] = []
    collection = Suppression._get_collection()
    real = collection.find_one

    def find_one(query: object, *args: object) -> object:
        queries.append(query)
        return real(query, *args)

    monkeypatch.setattr(type(collection), "find_one", lambda self, q, *a: find_one(q, *a))
    given = [f"U{i}@x.com" for i in range(count)] + ["u0@x.com"]
    found = suppressed_among(given)
    assert found == {
        **{f"U{i}@x.com": "manual" for i in range(0, count, 2)},
        "u0@x.com": "manual",
    }
    assert sorted(q["_id"] for q in queries) == sorted(f"u{i}@x.com" for i in range(count))
