"""SendEmail and its batch apply the suppression list (mongomock): drop and report, or refuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.rpc import error_details_pb2

from core.errors import InvalidArgument
from core.settings import Settings
from core.store.documents import Email
from core.store.repository import NewEmail
from core.store.suppressions import Suppression, suppress
from helpers import RecordingQueue
from mailroom.v1 import mail_pb2
from mailroom.v1 import suppressions_pb2 as spb
from server.servicer import MailServicer
from server.suppression_check import apply_suppression

HARD = spb.SuppressionReason.SUPPRESSION_REASON_HARD_BOUNCE


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    def send_initial_metadata(self, metadata: Any) -> None:
        pass


def make_servicer(settings: Settings, policy: str) -> MailServicer:
    settings.suppression_policy = policy  # type: ignore[assignment]
    return MailServicer(settings, RecordingQueue())  # type: ignore[arg-type]


@pytest.fixture
def store(fake_store: None) -> None:
    Suppression.drop_collection()
    Email.drop_collection()
    suppress("gone@example.com", "hard_bounce")
    suppress("Angry@Example.com", "complaint")


@pytest.fixture
def drop(settings: Settings, store: None) -> Iterator[MailServicer]:
    servicer = make_servicer(settings, "drop")
    yield servicer
    servicer.close()


@pytest.fixture
def refuse(settings: Settings, store: None) -> Iterator[MailServicer]:
    servicer = make_servicer(settings, "refuse")
    yield servicer
    servicer.close()


def request(**fields: Any) -> mail_pb2.SendEmailRequest:
    return mail_pb2.SendEmailRequest(title="t", content="c", **fields)


def test_drop_leaves_suppressed_recipients_out_and_reports_them(drop: MailServicer) -> None:
    reply = drop.SendEmail(
        request(to=["ok@example.com", "Gone <GONE@example.com>"], cc=["angry@example.com"]),
        Context(),
    )
    assert [(d.field, d.address, d.reason) for d in reply.dropped_recipients] == [
        ("to[1]", "Gone <GONE@example.com>", HARD),
        ("cc[0]", "angry@example.com", spb.SuppressionReason.SUPPRESSION_REASON_COMPLAINT),
    ]
    stored = Email.objects(id=reply.id).first()
    assert (stored.to, stored.cc, stored.recipients) == (
        ["ok@example.com"],
        [],
        ["ok@example.com"],
    )


def test_drop_refuses_an_email_left_without_a_to_recipient(drop: MailServicer) -> None:
    with pytest.raises(InvalidArgument) as caught:
        drop.SendEmail(request(to=["gone@example.com"], cc=["ok@example.com"]), Context())
    [violation] = caught.value.violations
    assert violation.field == "to[0]"
    assert "suppressed (hard_bounce)" in violation.description
    assert Email.objects.count() == 0


def test_refuse_refuses_any_suppressed_recipient_naming_each(refuse: MailServicer) -> None:
    with pytest.raises(InvalidArgument) as caught:
        refuse.SendEmail(
            request(to=["ok@example.com"], bcc=["x@example.com", "gone@example.com"]), Context()
        )
    assert [v.field for v in caught.value.violations] == ["bcc[1]"]
    assert Email.objects.count() == 0
    reply = refuse.SendEmail(request(to=["ok@example.com"]), Context())
    assert reply.id and not reply.dropped_recipients


def test_a_batch_checks_every_email_with_one_query(
    drop: MailServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store import suppressions

    calls: list[int] = []
    real = suppressions.suppressed_among

    def counting(addresses: Any) -> dict[str, str]:
        calls.append(1)
        return real(addresses)

    monkeypatch.setattr(suppressions, "suppressed_among", counting)
    monkeypatch.setattr("server.suppression_check.suppressed_among", counting)
    reply = drop.SendEmailBatch(
        mail_pb2.SendEmailBatchRequest(
            emails=[
                request(to=["ok@example.com", "gone@example.com"]),
                request(to=["angry@example.com"]),
                request(to=["fine@example.com"]),
            ]
        ),
        Context(),
    )
    assert len(calls) == 1
    first, second, third = reply.results
    assert first.id and [d.field for d in first.dropped_recipients] == ["to[1]"]
    assert not second.id
    bad = error_details_pb2.BadRequest()
    second.error.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["emails[1].to[0]"]
    assert "complaint" in bad.field_violations[0].description
    assert third.id and not third.dropped_recipients
    assert (reply.accepted_count, reply.refused_count) == (2, 1)


def test_nothing_suppressed_keeps_the_same_email() -> None:
    email = NewEmail(to=["a@x.com"], subject="s", text="t", from_address="f@x.com")
    assert apply_suppression(email, {}, "drop") == (email, [])
    assert apply_suppression(email, {"other@x.com": "manual"}, "refuse") == (email, [])


def test_a_stalled_lookup_answers_not_accepted(
    drop: MailServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import NotAccepted, StorageOutcomeUnknown

    def stall(emails: Any) -> dict[str, str]:
        raise StorageOutcomeUnknown("storage did not answer in time (NetworkTimeout)")

    monkeypatch.setattr("server.suppression_check.find_suppressed", stall)
    monkeypatch.setattr("server.batch.find_suppressed", stall)
    with pytest.raises(NotAccepted) as caught:
        drop.SendEmail(request(to=["ok@example.com"]), Context())
    assert "same idempotency key is safe" in caught.value.message
    with pytest.raises(NotAccepted):
        drop.SendEmailBatch(
            mail_pb2.SendEmailBatchRequest(emails=[request(to=["ok@example.com"])]), Context()
        )
    assert Email.objects.count() == 0
