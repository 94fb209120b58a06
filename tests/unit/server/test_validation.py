from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import FieldViolation, InvalidArgument, PermissionDenied
from core.store.documents import Status, delay_ms, initial_status
from mailroom.v1 import mail_pb2
from server.validation import validate_send_request


def request(**overrides) -> mail_pb2.SendEmailRequest:
    fields = {"to": ["a@example.com"], "title": "Subject", "content": "body"}
    fields.update(overrides)
    return mail_pb2.SendEmailRequest(**fields)


def violated_fields(req, settings, **kwargs) -> list[str]:
    with pytest.raises(InvalidArgument) as info:
        validate_send_request(req, settings, **kwargs)
    return [v.field for v in info.value.violations]


def test_valid_request_is_normalised(settings):
    new = validate_send_request(
        request(cc=["B <b@Example.com>"], bcc=["c@example.com"], reply_to="r@example.com"), settings
    )
    assert new.to == ["a@example.com"]
    assert new.cc == ["B <b@example.com>"]
    assert new.bcc == ["c@example.com"]
    assert new.from_address == settings.default_from
    assert new.reply_to == "r@example.com"
    assert new.send_at is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"to": []}, "to"),
        ({"to": ["not-an-address"]}, "to[0]"),
        ({"to": ["a@example.com", "b@@example.com"]}, "to[1]"),
        ({"cc": ["nope"]}, "cc[0]"),
        ({"bcc": ["x@"]}, "bcc[0]"),
        ({"to": ["a@example.com\r\nBcc: evil@example.com"]}, "to[0]"),
        ({"title": ""}, "title"),
        ({"title": "Hi\r\nBcc: evil@example.com"}, "title"),
        ({"title": "line\nbreak"}, "title"),
        ({"content": "", "html": ""}, "content"),
        ({"from_address": "bad address"}, "from"),
        ({"from_address": "a@example.com\nX: y"}, "from"),
        ({"reply_to": "r@example.com\r\n"}, "reply_to"),
        ({"reply_to": "nope"}, "reply_to"),
        ({"to": [f"u{i}@example.com" for i in range(51)]}, "to"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_each_rule_names_its_field(settings, overrides, field):
    assert field in violated_fields(request(**overrides), settings)


def test_recipient_limit_counts_to_cc_and_bcc(settings):
    req = request(
        to=[f"t{i}@example.com" for i in range(20)],
        cc=[f"c{i}@example.com" for i in range(20)],
        bcc=[f"b{i}@example.com" for i in range(11)],
    )
    assert violated_fields(req, settings) == ["bcc"]
    req.bcc.pop()
    validate_send_request(req, settings)


def test_invalid_send_at_is_a_field_violation(settings):
    req = request()
    req.send_at.seconds = 400_000_000_000  # beyond year 9999
    assert violated_fields(req, settings) == ["send_at"]
    req.send_at.seconds, req.send_at.nanos = 0, -1
    assert violated_fields(req, settings) == ["send_at"]


def test_size_limit_names_the_larger_body(settings):
    small = settings.model_copy(update={"max_email_bytes": 1000})
    assert violated_fields(request(content="x", html="y" * 2000), small) == ["html"]


def test_html_alone_is_a_body(settings):
    assert validate_send_request(request(content="", html="<p>hi</p>"), settings).html


def test_size_limit(settings):
    small = settings.model_copy(update={"max_email_bytes": 1000})
    assert violated_fields(request(content="x" * 2000), small) == ["content"]


def test_all_violations_are_reported_together(settings):
    fields = violated_fields(request(to=["bad"], title="", content=""), settings)
    assert fields == ["to[0]", "title", "content"]


def ts(dt: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt)
    return out


def test_send_at(settings):
    now = datetime(2026, 1, 1, 12, 0)
    future = validate_send_request(
        request(send_at=ts(datetime(2026, 1, 2, tzinfo=UTC))), settings, now=now
    )
    assert future.send_at == datetime(2026, 1, 2)
    past = validate_send_request(
        request(send_at=ts(datetime(2025, 1, 1, tzinfo=UTC))), settings, now=now
    )
    # Kept as given; a send_at in the past means "send now" (core.store.documents.is_scheduled).
    assert past.send_at == datetime(2025, 1, 1)
    assert initial_status(past.send_at, now) == Status.QUEUED
    assert initial_status(future.send_at, now) == Status.SCHEDULED
    assert delay_ms(past.send_at, now) is None
    assert delay_ms(future.send_at, now) == 12 * 3600 * 1000
    too_far = request(send_at=ts(datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=31)))
    assert violated_fields(too_far, settings, now=now) == ["send_at"]


def test_idempotency_key_from_metadata_wins(settings):
    new = validate_send_request(request(idempotency_key="body"), settings, idempotency_key="hdr")
    assert new.idempotency_key == "hdr"


# Issue 11: IDN, one address per entry, limits, the sender policy.


def test_idn_domains_are_kept_in_idna_form_when_the_local_part_is_ascii(settings):
    new = validate_send_request(
        request(
            to=["Bob <bob@xn--bcher-kva.example>", "user@Bücher.example"],
            cc=["Ann Müller <ann@bücher.example>"],
            from_address="Shop <shop@bücher.example>",
        ),
        settings,
    )
    assert new.to == ["Bob <bob@xn--bcher-kva.example>", "user@xn--bcher-kva.example"]
    assert new.cc == ['"Ann Müller" <ann@xn--bcher-kva.example>']
    assert new.from_address == "Shop <shop@xn--bcher-kva.example>"


def test_a_non_ascii_local_part_keeps_its_unicode_domain(settings):
    new = validate_send_request(request(to=["Jo <ü@bücher.example>"]), settings)
    assert new.to == ["Jo <ü@bücher.example>"]


def test_two_addresses_in_one_entry_are_refused(settings):
    with pytest.raises(InvalidArgument) as info:
        validate_send_request(request(to=["a@x.com, b@x.com"]), settings)
    [violation] = info.value.violations
    assert violation == FieldViolation("to[0]", "one address per entry")


def test_title_and_address_limits(settings):
    assert violated_fields(request(title="x" * (settings.max_title_chars + 1)), settings) == [
        "title"
    ]
    validate_send_request(request(title="x" * settings.max_title_chars), settings)
    assert violated_fields(request(to=["a" * 64 + "@" + "b" * 60 + "." + "c" * 200]), settings)
    short = settings.model_copy(update={"max_title_chars": 10})
    assert violated_fields(request(title="x" * 11), short) == ["title"]


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("a@shop.example", True),
        ("Shop <a@SHOP.example>", True),
        ("a@xn--bcher-kva.example", True),
        ("a@bücher.example", True),
        ("a@sub.shop.example", False),
        ("CEO <ceo@bank.example>", False),
    ],
)
def test_the_sender_policy(settings, sender, allowed):
    policy = settings.model_copy(
        update={"allowed_from_domains": ["shop.example", "Bücher.example"]}
    )
    if allowed:
        validate_send_request(request(from_address=sender), policy)
    else:
        with pytest.raises(PermissionDenied) as info:
            validate_send_request(request(from_address=sender), policy)
        assert info.value.message.startswith("from:")
    # Empty: any sender; no from: the default sender, whatever the list.
    validate_send_request(request(from_address=sender), settings)
    validate_send_request(request(), policy)


def test_runs_of_spaces_in_a_display_name_become_one(settings):
    # The email package's reader parses a space and the whitespace after it in a name as one
    # space, even inside an encoded word: stored as it will read back (the property test found
    # "0  0" and "0 \xa00" with a non-ASCII local part).
    new = validate_send_request(
        request(
            to=['"Ann  Lee" <ann@example.com>', '"0 \xa00" <ü@0.com>', '"a\xa0 b" <b@example.com>']
        ),
        settings,
    )
    assert new.to == ["Ann Lee <ann@example.com>", "0 0 <ü@0.com>", '"a\xa0 b" <b@example.com>']
