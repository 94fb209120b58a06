"""Request building and response conversion of the SDK (no network)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from mailroom import Attempt, AttemptOutcome, Email, EmailStatus
from mailroom._convert import build_send_request, email_from_proto
from mailroom.v1 import mail_pb2


def test_send_at_becomes_the_same_instant_as_a_timestamp():
    paris_summer = timezone(timedelta(hours=2))
    send_at = datetime(2030, 6, 1, 14, 30, 15, 250000, tzinfo=paris_summer)
    request = build_send_request(["a@example.com"], "t", "c", send_at=send_at)
    assert request.HasField("send_at")
    assert request.send_at.ToDatetime(tzinfo=UTC) == send_at
    assert request.send_at.ToDatetime() == datetime(2030, 6, 1, 12, 30, 15, 250000)


def test_naive_send_at_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        build_send_request(["a@example.com"], "t", "c", send_at=datetime(2030, 6, 1, 12))


def test_no_send_at_leaves_the_field_unset():
    request = build_send_request(["a@example.com"], "t", "c")
    assert not request.HasField("send_at")


def test_an_idempotency_key_is_generated_for_each_call():
    first = build_send_request(["a@example.com"], "t", "c").idempotency_key
    second = build_send_request(["a@example.com"], "t", "c").idempotency_key
    assert uuid.UUID(first).version == 4
    assert uuid.UUID(second).version == 4
    assert first != second


def test_a_given_idempotency_key_is_sent_unchanged():
    request = build_send_request(["a@example.com"], "t", "c", idempotency_key="order-42")
    assert request.idempotency_key == "order-42"


def test_an_empty_idempotency_key_is_rejected():
    with pytest.raises(ValueError, match="idempotency_key"):
        build_send_request(["a@example.com"], "t", "c", idempotency_key="")


def test_every_argument_lands_in_its_field():
    request = build_send_request(
        ("a@example.com", "b@example.com"),
        "Subject",
        "Body",
        cc=["c@example.com"],
        bcc=iter(["d@example.com"]),
        html="<p>Body</p>",
        from_="Shop <shop@example.com>",
        reply_to="help@example.com",
    )
    assert list(request.to) == ["a@example.com", "b@example.com"]
    assert list(request.cc) == ["c@example.com"]
    assert list(request.bcc) == ["d@example.com"]
    assert request.title == "Subject"
    assert request.content == "Body"
    assert request.html == "<p>Body</p>"
    assert request.from_address == "Shop <shop@example.com>"
    assert request.reply_to == "help@example.com"


def test_a_single_address_string_is_one_recipient_not_its_characters():
    request = build_send_request("a@example.com", "t", "c", cc="c@example.com")
    assert list(request.to) == ["a@example.com"]
    assert list(request.cc) == ["c@example.com"]


def _ts(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def _full_email() -> mail_pb2.Email:
    created = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    return mail_pb2.Email(
        id="e-1",
        status=mail_pb2.EMAIL_STATUS_SENT,
        to=["a@example.com"],
        cc=["c@example.com"],
        bcc=["d@example.com"],
        title="Subject",
        content="Body",
        html="<p>Body</p>",
        from_address="shop@example.com",
        reply_to="help@example.com",
        message_id="<m1@mailroom.local>",
        create_time=_ts(created),
        update_time=_ts(created + timedelta(seconds=3)),
        sent_time=_ts(created + timedelta(seconds=2)),
        provider="smtp",
        provider_message_id="250 OK id=1",
        last_error="421 try later",
        attempts=[
            mail_pb2.Attempt(
                provider="smtp",
                start_time=_ts(created + timedelta(seconds=1)),
                duration=duration_pb2.Duration(seconds=1, nanos=500_000_000),
                outcome=mail_pb2.ATTEMPT_OUTCOME_TRANSIENT,
                error="421 try later",
                response="421 try later",
                worker="host:1",
            ),
            mail_pb2.Attempt(provider="smtp", outcome=mail_pb2.ATTEMPT_OUTCOME_DELIVERED),
        ],
    )


def test_an_email_message_converts_to_a_typed_email():
    email = email_from_proto(_full_email())
    created = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert email.id == "e-1"
    assert email.status is EmailStatus.SENT
    assert email.is_final
    assert email.to == ["a@example.com"]
    assert email.cc == ["c@example.com"]
    assert email.bcc == ["d@example.com"]
    assert (email.title, email.content, email.html) == ("Subject", "Body", "<p>Body</p>")
    assert email.from_address == "shop@example.com"
    assert email.reply_to == "help@example.com"
    assert email.message_id == "<m1@mailroom.local>"
    assert email.create_time == created
    assert email.create_time.tzinfo is not None
    assert email.update_time == created + timedelta(seconds=3)
    assert email.sent_time == created + timedelta(seconds=2)
    assert email.send_at is None
    assert (email.provider, email.provider_message_id) == ("smtp", "250 OK id=1")
    assert email.last_error == "421 try later"
    assert email.attempts == [
        Attempt(
            provider="smtp",
            outcome=AttemptOutcome.TRANSIENT,
            start_time=created + timedelta(seconds=1),
            duration=timedelta(seconds=1.5),
            error="421 try later",
            response="421 try later",
            worker="host:1",
        ),
        Attempt(provider="smtp", outcome=AttemptOutcome.DELIVERED),
    ]


def test_empty_fields_become_none():
    email = email_from_proto(
        mail_pb2.Email(id="e-2", status=mail_pb2.EMAIL_STATUS_QUEUED, to=["a@example.com"])
    )
    assert email.status is EmailStatus.QUEUED
    assert not email.is_final
    assert email.html is None
    assert email.reply_to is None
    assert email.last_error is None
    assert email.create_time is None
    assert email.sent_time is None
    assert email.attempts == []


def test_a_status_from_a_newer_server_is_unspecified_not_an_error():
    email = email_from_proto(mail_pb2.Email(id="e-3", status=99))
    assert email.status is EmailStatus.UNSPECIFIED
    attempt = email_from_proto(
        mail_pb2.Email(id="e-3", attempts=[mail_pb2.Attempt(outcome=42)])
    ).attempts[0]
    assert attempt.outcome is AttemptOutcome.UNSPECIFIED


@pytest.mark.parametrize("status", list(EmailStatus), ids=lambda s: s.name)
def test_python_enums_match_the_proto_enums(status):
    assert mail_pb2.EmailStatus.Name(status.value) == f"EMAIL_STATUS_{status.name}"
    final = {"SENT", "FAILED", "CANCELLED", "DELIVERED", "BOUNCED", "COMPLAINED"}
    assert status.is_final == (status.name in final)


def test_every_proto_enum_value_has_a_python_member():
    assert {v.number for v in mail_pb2.EmailStatus.DESCRIPTOR.values} == {
        s.value for s in EmailStatus
    }
    assert {v.number for v in mail_pb2.AttemptOutcome.DESCRIPTOR.values} == {
        o.value for o in AttemptOutcome
    }
    for outcome in AttemptOutcome:
        assert mail_pb2.AttemptOutcome.Name(outcome.value) == f"ATTEMPT_OUTCOME_{outcome.name}"


def test_every_email_field_is_converted():
    proto_fields = {f.name for f in mail_pb2.Email.DESCRIPTOR.fields}
    dataclass_fields = {f.name for f in dataclasses.fields(Email)}
    assert proto_fields == dataclass_fields
    attempt_fields = {f.name for f in mail_pb2.Attempt.DESCRIPTOR.fields}
    assert attempt_fields == {f.name for f in dataclasses.fields(Attempt)}


def test_an_email_is_frozen():
    email = email_from_proto(_full_email())
    with pytest.raises(dataclasses.FrozenInstanceError):
        email.status = EmailStatus.FAILED  # type: ignore[misc]
