"""core.dsn: RFC 3464 reports into events."""

from __future__ import annotations

import pytest
from provider_samples import dsn

from core.dsn import NotADsn, parse_dsn
from core.store.events import EventType


def test_a_permanent_failure_is_a_hard_bounce_with_its_diagnostic() -> None:
    (event,) = parse_dsn(dsn("<abc@mailroom.test>", "gone@example.net"))
    assert event.type == EventType.BOUNCED and event.bounce_type == "hard"
    assert event.recipient == "gone@example.net"
    assert event.message_id == "<abc@mailroom.test>"
    assert event.diagnostic_code == "5.1.1"
    assert event.description.startswith("smtp; 550 5.1.1 <gone@example.net>")
    assert event.provider == "smtp"
    assert event.key == "smtp:<20261202210000.ABC123@mx.example.org>:gone@example.net"
    assert event.occurred_at.isoformat() == "2026-12-02T20:59:58"


def test_a_delay_report_is_deferred() -> None:
    (event,) = parse_dsn(dsn("<abc@mailroom.test>", "slow@example.net", status="4.4.1"))
    assert event.type == EventType.DEFERRED


def test_a_plain_message_is_not_a_dsn() -> None:
    with pytest.raises(NotADsn):
        parse_dsn(b"From: a@b\r\nSubject: hello\r\n\r\nhi\r\n")
