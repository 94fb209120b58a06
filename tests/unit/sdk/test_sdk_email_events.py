"""The SDK's view of provider events on an email."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mailroom._convert import email_from_proto
from mailroom.email_events import EmailEvent, EmailEventType, RecipientState, RecipientSummary
from mailroom.models import EmailStatus
from mailroom.v1 import mail_pb2


def test_events_and_recipient_statuses_are_converted() -> None:
    when = Timestamp()
    when.FromDatetime(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    message = mail_pb2.Email(
        id="e-1",
        status=mail_pb2.EMAIL_STATUS_BOUNCED,
        events=[
            mail_pb2.EmailEvent(
                id="ses:n1:a@example.com",
                type=mail_pb2.EMAIL_EVENT_TYPE_BOUNCED,
                provider="ses",
                recipient="a@example.com",
                time=when,
                bounce_type="hard",
                diagnostic_code="5.1.1",
            ),
            mail_pb2.EmailEvent(id="x", type=99),
        ],
        recipient_statuses=[
            mail_pb2.RecipientSummary(
                address="a@example.com", status=mail_pb2.RECIPIENT_STATUS_BOUNCED, update_time=when
            )
        ],
    )
    email = email_from_proto(message)
    assert email.status is EmailStatus.BOUNCED and email.is_final
    assert email.events[0] == EmailEvent(
        id="ses:n1:a@example.com",
        type=EmailEventType.BOUNCED,
        provider="ses",
        recipient="a@example.com",
        time=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
        bounce_type="hard",
        diagnostic_code="5.1.1",
    )
    assert email.events[1].type is EmailEventType.UNSPECIFIED
    assert email.recipient_statuses == [
        RecipientSummary(
            "a@example.com", RecipientState.BOUNCED, datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
        )
    ]


def test_the_python_types_mirror_the_proto() -> None:
    assert {v.number for v in mail_pb2.EmailEventType.DESCRIPTOR.values} == {
        t.value for t in EmailEventType
    }
    for kind in EmailEventType:
        assert mail_pb2.EmailEventType.Name(kind.value) == f"EMAIL_EVENT_TYPE_{kind.name}"
    for state in RecipientState:
        assert mail_pb2.RecipientStatus.Name(state.value) == f"RECIPIENT_STATUS_{state.name}"
    assert {f.name for f in mail_pb2.EmailEvent.DESCRIPTOR.fields} == {
        f.name for f in dataclasses.fields(EmailEvent)
    }
    assert {f.name for f in mail_pb2.RecipientSummary.DESCRIPTOR.fields} == {
        f.name for f in dataclasses.fields(RecipientSummary)
    }
