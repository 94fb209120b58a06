"""The bucket walk's choice of buckets: coverage of aligned buckets and remembered densities."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from bson import ObjectId

from core.store import bucket_walk, repository
from core.store.documents import Email, utcnow
from core.store.listing import EmailFilter, list_page
from core.store.repository import LIST_BUCKET_SPANS

HOUR, SIX_HOURS, DAY = LIST_BUCKET_SPANS[:3]

pytestmark = pytest.mark.usefixtures("fake_store")


@pytest.fixture(autouse=True)
def forget_densities() -> Iterator[None]:
    bucket_walk._densities.clear()
    yield
    bucket_walk._densities.clear()


def store(age: timedelta, tag: str, *, now: datetime | None = None) -> ObjectId:
    now = (now or utcnow()).replace(microsecond=0) - age
    oid = ObjectId.from_datetime(now.replace(tzinfo=UTC))
    new = repository.NewEmail(
        to=["to@example.com"], subject="s", text="t", from_address="shop@example.com", tags=[tag]
    )
    document = repository.new_email_document(new, message_id_domain="test", email_id=oid, now=now)
    repository.insert_email(document)
    return oid


def count_queries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    queries: list[dict[str, Any]] = []
    collection = Email._get_collection()
    find = collection.find

    def counting(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        queries.append(query)
        return find(query, *args, **kwargs)

    monkeypatch.setattr(collection, "find", counting)
    return queries


def test_without_a_remembered_density_the_walk_starts_with_an_hour_and_grows_slowly() -> None:
    now = 10 * DAY + HOUR
    assert bucket_walk._span(0, 0, 51, now, now, None) == HOUR
    # One match in the hour scanned, 50 needed: at most 8 times the time scanned.
    assert bucket_walk._span(1, HOUR, 50, now - HOUR, now, None) == SIX_HOURS


def test_a_remembered_density_picks_the_bucket_adding_most_for_what_ferretdb_decodes() -> None:
    density = 1 / HOUR  # one match an hour
    # At a day boundary a day bucket adds a whole day: 24 matches decoded, 20 needed.
    assert bucket_walk._span(0, 0, 20, 10 * DAY, 11 * DAY, density) == DAY
    # An hour past the boundary a day bucket adds one hour but decodes a day's matches
    # (its part above the walk included): the hour bucket adds as much for less.
    assert bucket_walk._span(0, 0, 20, 10 * DAY + HOUR, 11 * DAY, density) == HOUR
    # Nothing decoded is newer than now: the current day's bucket costs what has passed of it.
    assert bucket_walk._span(0, 0, 20, 10 * DAY + 20 * HOUR, 10 * DAY + 20 * HOUR, density) == DAY


def test_a_sparse_filter_takes_fewer_queries_once_its_density_is_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Which buckets a page needs depends on where "now" falls in the hour and the day: the
    # saving is an average, so the pages are read at start times spread over a day (the test
    # once asserted it at the wall clock's time, and failed around 11:15 UTC).
    cold_total = again_total = 0
    for hour in range(0, 24, 3):
        now = datetime(2026, 12, 3, hour, 17, 41)
        clock = SimpleNamespace(time=lambda now=now: now.replace(tzinfo=UTC).timestamp())
        monkeypatch.setattr(bucket_walk, "time", clock)
        Email._get_collection().delete_many({})
        bucket_walk._densities.clear()
        # One email in ten matches "rare"; an email every 6 minutes over 40 hours.
        tags = ["rare" if i % 10 == 0 else "common" for i in range(400)]
        rare = [store(timedelta(minutes=6 * i), tag, now=now) for i, tag in enumerate(tags)]
        expected = [oid for i, oid in enumerate(rare) if i % 10 == 0]
        email_filter = EmailFilter.of(tag="rare")
        queries = count_queries(monkeypatch)

        first = list_page(email_filter, page_size=20, bucketed=True)
        cold_total += len(queries)
        assert [e.id for e in first.emails] == expected[:20]
        density = bucket_walk.remembered_density(email_filter.digest())
        assert density == pytest.approx(1 / 3600, rel=0.2)

        queries.clear()
        again = list_page(email_filter, page_size=20, bucketed=True)
        again_total += len(queries)
        assert [e.id for e in again.emails] == expected[:20]
        # The deep page follows the same density, and pages on exactly.
        deep = list_page(
            email_filter, page_size=20, page_token=again.next_page_token, bucketed=True
        )
        assert [e.id for e in deep.emails] == expected[20:]
        monkeypatch.undo()  # the clock and the counting find, made again next round
    assert again_total < cold_total, (cold_total, again_total)


def test_the_remembered_densities_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bucket_walk, "_DENSITY_KEPT", 3)
    for i in range(5):
        bucket_walk._remember_density(EmailFilter.of(tag=f"t{i}").digest(), float(i))
    assert bucket_walk.remembered_density(EmailFilter.of(tag="t0").digest()) is None
    assert bucket_walk.remembered_density(EmailFilter.of(tag="t4").digest()) == 4.0
