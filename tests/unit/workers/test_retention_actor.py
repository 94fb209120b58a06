"""The retention job over an in-memory store: which emails lose their content, and what stays."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from admin.cli import build_parser
from core.errors import FailedPrecondition
from core.store import repository, turns
from core.store.documents import Email, Status, utcnow
from core.store.retention import candidate_batches, candidate_filter
from workers.retention import purge_old_emails, run_retention
from workers.store import dead_letters

DAYS = 30
OLD = timedelta(days=DAYS + 5)
RECENT = timedelta(days=DAYS - 5)
PDF = b"%PDF-1.4 report" * 100


def store_email(status: Status, *, age: timedelta, **fields: Any) -> str:
    """Store an email accepted and last changed ``age`` ago, as the API and a worker leave it."""
    then = utcnow() - age
    email_id = ObjectId(ObjectId.from_datetime(then).binary[:4] + os.urandom(8))
    new = repository.NewEmail(
        to=["Ann <ann@example.com>"],
        cc=["cc@example.com"],
        subject="Your invoice",
        text="Hello Ann, the invoice is attached.",
        html="<p>Hello Ann</p>",
        from_address="billing@example.com",
        attachments=[
            repository.NewAttachment("invoice.pdf", "application/pdf", PDF),
            repository.NewAttachment("logo.png", "image/png", b"\x89PNG", content_id="logo"),
        ],
        headers={"X-Campaign": "spring"},
        tags=["invoice"],
        metadata={"customer": "c-42"},
    )
    document = repository.new_email_document(
        new, message_id_domain="mailroom.test", email_id=email_id, now=then
    )
    document["status"] = str(status)
    document["attempts"] = [
        {"provider": "smtp", "started_at": then, "outcome": "DELIVERED", "response": "250 ok"}
    ]
    document["attempt_count"] = 1
    document.update(fields)
    repository.insert_email(document)
    return str(email_id)


def raw(email_id: str) -> dict[str, Any]:
    document = Email._get_collection().find_one({"_id": ObjectId(email_id)})
    assert document is not None
    return document


def purge(**options: Any) -> Any:
    """One run of the job at the default retention, as the scheduler runs it (minus its lock)."""
    options.setdefault("batch_size", 500)
    return purge_old_emails(cutoff=utcnow() - timedelta(days=DAYS), **options)


@pytest.mark.parametrize("status", [Status.SENT, Status.FAILED, Status.CANCELLED])
def test_an_old_final_email_loses_its_content_and_keeps_its_record(fake_store, status) -> None:
    email_id = store_email(status, age=OLD, last_error="", sent_at=utcnow() - OLD)
    before = raw(email_id)

    result = purge()

    assert (result.purged, result.skipped) == (1, 0)
    after = raw(email_id)
    assert (after["text"], after["html"], after["headers"]) == ("", "", {})
    assert after["attachments"] == [
        {
            "filename": "invoice.pdf",
            "content_type": "application/pdf",
            "content_id": "",
            "size": len(PDF),
        },
        {"filename": "logo.png", "content_type": "image/png", "content_id": "logo", "size": 4},
    ]
    assert abs(after["purged_at"] - utcnow()) < timedelta(minutes=1)
    # What was sent, to whom and how it went stays answerable.
    for kept in (
        "status",
        "subject",
        "to",
        "cc",
        "from_address",
        "message_id",
        "tags",
        "metadata",
        "recipients",
        "metadata_pairs",
        "attempts",
        "attempt_count",
        "created_at",
        "updated_at",
        "sent_at",
    ):
        assert after[kept] == before[kept], kept


@pytest.mark.parametrize(
    "status",
    [Status.QUEUED, Status.SCHEDULED, Status.SENDING, Status.RETRYING],
)
def test_an_email_on_its_way_is_never_purged_however_old(fake_store, status) -> None:
    email_id = store_email(status, age=timedelta(days=400))
    before = raw(email_id)

    assert purge().purged == 0
    assert raw(email_id) == before


def test_a_final_email_changed_within_the_retention_period_is_kept(fake_store) -> None:
    recent = store_email(Status.SENT, age=RECENT)
    # Accepted long ago, but failed (or was replayed and sent) recently: its last change counts.
    changed_lately = store_email(Status.FAILED, age=OLD, updated_at=utcnow() - RECENT)
    kept = {email_id: raw(email_id) for email_id in (recent, changed_lately)}

    assert purge().purged == 0
    assert {email_id: raw(email_id) for email_id in kept} == kept


def test_a_second_run_changes_nothing(fake_store) -> None:
    email_id = store_email(Status.SENT, age=OLD)
    assert purge().purged == 1
    after_first = raw(email_id)

    second = purge()

    assert (second.purged, second.skipped) == (0, 0)
    assert raw(email_id) == after_first


def test_every_email_is_purged_across_batches(fake_store) -> None:
    ids = [store_email(status, age=OLD) for status in [Status.SENT] * 5 + [Status.FAILED] * 3]
    kept_alive = []

    result = purge(batch_size=2, keep_alive=lambda: kept_alive.append(1) or True)

    assert result.purged == 8
    assert all(raw(email_id)["purged_at"] is not None for email_id in ids)
    assert len(kept_alive) >= 4  # the lock is kept alive batch after batch


def test_a_run_that_lost_its_lock_stops(fake_store) -> None:
    for _ in range(4):
        store_email(Status.SENT, age=OLD)

    result = purge(batch_size=2, keep_alive=lambda: False)

    assert result.aborted
    assert result.purged == 2


def test_the_walk_reads_no_attachment_content(fake_store) -> None:
    store_email(Status.SENT, age=OLD)

    batches = list(candidate_batches(cutoff=utcnow() - timedelta(days=DAYS), batch_size=10))

    [[candidate]] = batches
    assert all("content" not in attachment for attachment in candidate.attachments)


def test_the_filter_only_takes_final_statuses() -> None:
    with pytest.raises(ValueError, match="not a final status"):
        candidate_filter(Status.RETRYING, datetime(2026, 1, 1))


# --- purges and replays: a FAILED email is either replayed or purged, never sent empty -------


def dead_lettered(age: timedelta) -> str:
    email_id = store_email(Status.FAILED, age=age, last_error="550 mailbox unavailable")
    dead_letters.save_dead_letter(email_id, reason="retries spent", retries=3, message={})
    return email_id


def test_a_purged_email_cannot_be_replayed(fake_store) -> None:
    email_id = dead_lettered(OLD)
    purge()

    with pytest.raises(FailedPrecondition, match="purged by retention"):
        dead_letters.replay(email_id)

    assert raw(email_id)["status"] == "FAILED"


def test_a_replay_in_progress_keeps_the_purge_off_the_email(fake_store) -> None:
    email_id = dead_lettered(OLD)
    # The replay has taken the email's next turn and is about to write QUEUED.
    replaying = Email.objects(id=email_id).first()
    assert isinstance(turns.acquire_turn(replaying, turns.TurnPurpose.REPLAY), turns.TurnTaken)
    before = raw(email_id)

    result = purge()

    assert (result.purged, result.skipped) == (0, 1)
    assert raw(email_id) == before


def test_a_replayed_email_is_sent_with_its_content(fake_store) -> None:
    email_id = dead_lettered(OLD)

    replayed = dead_letters.replay(email_id)

    assert replayed is not None and replayed.status == Status.QUEUED
    assert purge().purged == 0
    assert raw(email_id)["text"] == "Hello Ann, the invoice is attached."


def test_the_purge_takes_a_turn_so_a_replay_that_read_before_it_is_refused(fake_store) -> None:
    email_id = dead_lettered(OLD)
    read_by_replay = Email.objects(id=email_id).first()  # the replay read it, not purged yet

    assert purge().purged == 1

    # Its turn is the purge's now: the replay cannot write.
    assert isinstance(
        turns.acquire_turn(read_by_replay, turns.TurnPurpose.REPLAY), turns.TurnBlocked
    )


# --- settings and the command line -----------------------------------------------------------


def test_run_retention_refuses_a_non_positive_period(settings) -> None:
    with pytest.raises(ValueError, match="positive"):
        run_retention(settings, client=None, days=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("days", ["0", "-1", "soon"])
def test_the_admin_command_refuses_a_bad_period(days, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["retention", "run", "--days", days])
    assert exit_info.value.code == 2
    assert "--days" in capsys.readouterr().err


def test_the_admin_command_takes_a_period() -> None:
    args = build_parser().parse_args(["retention", "run", "--days", "7.5", "--json"])
    assert (args.command, args.action, args.days, args.json) == ("retention", "run", 7.5, True)
