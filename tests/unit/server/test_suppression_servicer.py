"""SuppressionService (mongomock): field-named validation, 201 marker, NOT_FOUND, paging."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidArgument, NotFound
from core.settings import Settings
from core.store.suppressions import Suppression, suppress
from mailroom.v1 import suppressions_pb2 as pb
from server.suppression_check import reason_name, reason_value
from server.suppressions import SuppressionServicer, checked_address

R = pb.SuppressionReason


class Context:
    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata


@pytest.fixture
def servicer(fake_store: None, settings: Settings) -> SuppressionServicer:
    Suppression.drop_collection()
    return SuppressionServicer(settings, None)  # type: ignore[arg-type]


def _fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_add_answers_201_once_then_the_existing_entry(servicer: SuppressionServicer) -> None:
    first, context = Context(), Context()
    reply = servicer.AddSuppression(pb.AddSuppressionRequest(address="Bob@Example.COM"), first)
    assert reply.created is True and first.metadata == (("x-http-status", "201"),)
    assert reply.suppression.address == "bob@example.com"
    assert reply.suppression.reason == R.SUPPRESSION_REASON_MANUAL
    assert reply.suppression.create_time.seconds > 0
    again = servicer.AddSuppression(
        pb.AddSuppressionRequest(address="bob@example.com", reason=R.SUPPRESSION_REASON_COMPLAINT),
        context,
    )
    assert again.created is False and context.metadata == ()
    assert again.suppression.reason == R.SUPPRESSION_REASON_MANUAL


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"address": ""}, ["address"]),
        ({"address": "not an address"}, ["address"]),
        ({"address": "Bob <bob@example.com>"}, ["address"]),
        ({"address": "a@b.com, c@d.com"}, ["address"]),
        ({"address": "a@example.com", "reason": 42}, ["reason"]),
        ({"address": "nope", "reason": 42}, ["address", "reason"]),
    ],
)
def test_add_names_each_bad_field(
    servicer: SuppressionServicer, request_fields: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        servicer.AddSuppression(pb.AddSuppressionRequest(**request_fields), Context())
    assert _fields(caught) == fields


def test_remove_returns_the_entry_then_not_found(servicer: SuppressionServicer) -> None:
    suppress("a@example.com", "hard_bounce", provider="postmark", event_id="42")
    reply = servicer.RemoveSuppression(
        pb.RemoveSuppressionRequest(address="A@example.com"), Context()
    )
    assert reply.suppression.provider == "postmark" and reply.suppression.event_id == "42"
    with pytest.raises(NotFound) as caught:
        servicer.RemoveSuppression(pb.RemoveSuppressionRequest(address="a@example.com"), Context())
    assert caught.value.message.startswith("address:")
    with pytest.raises(InvalidArgument) as bad:
        servicer.RemoveSuppression(pb.RemoveSuppressionRequest(address="@@"), Context())
    assert _fields(bad) == ["address"]


def test_an_odd_address_a_provider_suppressed_is_removable(servicer: SuppressionServicer) -> None:
    suppress("weird..dots@example.com", "hard_bounce", provider="mailgun")
    reply = servicer.RemoveSuppression(
        pb.RemoveSuppressionRequest(address="Weird..Dots@example.com"), Context()
    )
    assert reply.suppression.address == "weird..dots@example.com"
    with pytest.raises(InvalidArgument):
        servicer.RemoveSuppression(
            pb.RemoveSuppressionRequest(address="weird..dots@example.com"), Context()
        )


def test_list_pages_with_the_reason_filter(servicer: SuppressionServicer) -> None:
    for i in range(5):
        suppress(f"u{i}@example.com", "complaint" if i < 3 else "manual")
    seen, token = [], ""
    while True:
        reply = servicer.ListSuppressions(
            pb.ListSuppressionsRequest(
                reason=R.SUPPRESSION_REASON_COMPLAINT, page_size=2, page_token=token
            ),
            Context(),
        )
        seen += [s.address for s in reply.suppressions]
        token = reply.next_page_token
        if not token:
            break
    assert sorted(seen) == ["u0@example.com", "u1@example.com", "u2@example.com"]
    everything = servicer.ListSuppressions(pb.ListSuppressionsRequest(page_size=9999), Context())
    assert len(everything.suppressions) == 5 and everything.next_page_token == ""


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"page_size": -1}, ["page_size"]),
        ({"reason": 77}, ["reason"]),
        ({"page_token": "!!"}, ["page_token"]),
    ],
)
def test_list_names_each_bad_field(
    servicer: SuppressionServicer, request_fields: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        servicer.ListSuppressions(pb.ListSuppressionsRequest(**request_fields), Context())
    assert _fields(caught) == fields


def test_reasons_round_trip_between_the_enum_and_the_store() -> None:
    for value in R.values():
        name = reason_name(value)
        if value == R.SUPPRESSION_REASON_UNSPECIFIED:
            assert name is None
        else:
            assert name is not None and reason_value(name) == value


def test_checked_address_keeps_the_idna_form() -> None:
    assert checked_address("user@BÜCHER.example") == "user@xn--bcher-kva.example"
