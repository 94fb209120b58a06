"""The list-buckets backfill on FerretDB: emails stored before ``list_buckets`` are found again.

Emails are stored as an older API left them (no ``list_buckets``) beside ones stored today;
``mailroom-admin backfill list-buckets`` (a real process) fills them, fenced by a turn, and
leaves an email a worker's live claim holds for a later run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from core.store import repository
from core.store.documents import Attempt, Email, Outcome, utcnow
from core.store.listing import EmailFilter, list_page
from workers.store import claims

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.usefixtures("real_store")


def stored(tag: str, at: datetime, *, buckets: bool = True) -> ObjectId:
    """An email stored at ``at``; without buckets as the API stored it before they existed."""
    oid = ObjectId.from_datetime(at.replace(tzinfo=UTC))
    oid = ObjectId(oid.binary[:4] + uuid.uuid4().bytes[:8])
    new = repository.NewEmail(
        to=["to@example.com"],
        subject="Old",
        text="body",
        from_address="shop@example.com",
        tags=[tag],
    )
    document = repository.new_email_document(
        new, message_id_domain="mailroom.test", email_id=oid, now=at
    )
    if not buckets:
        del document["list_buckets"]
    repository.insert_email(document)
    return oid


@pytest.fixture
def admin(service_env: dict[str, str]):
    def run(*args: str) -> tuple[int, dict[str, int]]:
        proc = subprocess.run(
            [str(BIN / "mailroom-admin"), *args],
            env={**os.environ, **service_env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])

    return run


def test_backfill_gives_old_emails_their_buckets_so_pages_find_them(admin) -> None:
    tag = f"bf-{uuid.uuid4().hex[:10]}"
    hour = (utcnow() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    # Ten emails stored today and, among the newest, two stored before buckets existed.
    times = [hour + timedelta(minutes=50 - 4 * i) for i in range(12)]
    bucketless = {1, 3}
    ids = [stored(tag, at, buckets=i not in bucketless) for i, at in enumerate(times)]
    held = stored(tag, hour + timedelta(minutes=55), buckets=False)
    email_filter = EmailFilter.of(tag=tag)

    first = list_page(email_filter, page_size=4, bucketed=True)
    # The walk's buckets cannot hold the three stored without them.
    assert [e.id for e in first.emails] == [ids[0], ids[2], ids[4], ids[5]]

    # A worker holds one of them with a live claim: the backfill leaves it for a later run.
    email = claims.load_claimable(str(held))
    assert email is not None
    claim = claims.claim(email, owner="test-worker", lease_seconds=300)
    assert isinstance(claim, claims.Claim)

    status, result = admin("backfill", "list-buckets", "--batch-size", "2", "--json")
    assert status == 1 and result["skipped"] >= 1 and result["filled"] >= 2, result
    for oid in (ids[1], ids[3]):
        document = Email._get_collection().find_one({"_id": oid})
        assert document["list_buckets"] == repository.list_buckets(oid)
        assert document["status"] == "QUEUED"
    assert "list_buckets" not in Email._get_collection().find_one({"_id": held})

    # The worker's outcome is written as usual (the backfill's turn did not fence it out) ...
    attempt = Attempt(provider="smtp", started_at=utcnow(), outcome=Outcome.DELIVERED)
    assert claims.record_sent(claim, attempt, provider_message_id="m-1")
    # ... and the next run fills the email it skipped; one more finds nothing of ours to do.
    status, result = admin("backfill", "list-buckets", "--json")
    assert status == 0 and result["filled"] >= 1, result
    document = Email._get_collection().find_one({"_id": held})
    assert document["list_buckets"] == repository.list_buckets(held)
    assert document["status"] == "SENT"

    every: list[ObjectId] = []
    token = ""
    while True:
        page = list_page(email_filter, page_size=4, page_token=token, bucketed=True)
        every += [e.id for e in page.emails]
        token = page.next_page_token
        if not token:
            break
    assert every == [held, *ids]
