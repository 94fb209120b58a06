"""The SDK's suppression list: enum parity with the proto, conversions, the requests it sends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mailroom import (
    AsyncMailroomClient,
    DroppedRecipient,
    MailroomClient,
    Suppression,
    SuppressionReason,
)
from mailroom.v1 import suppressions_pb2 as pb


def test_every_proto_reason_has_a_python_member() -> None:
    assert {v.number for v in pb.SuppressionReason.DESCRIPTOR.values} == {
        r.value for r in SuppressionReason
    }
    for member in SuppressionReason:
        assert pb.SuppressionReason.Name(member.value) == f"SUPPRESSION_REASON_{member.name}"
    assert SuppressionReason.from_proto(99) is SuppressionReason.UNSPECIFIED


def test_an_entry_converts_with_an_aware_time_and_none_for_empty_fields() -> None:
    when = Timestamp()
    when.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    entry = Suppression.from_proto(
        pb.Suppression(address="a@x.com", reason=1, provider="ses", create_time=when)
    )
    assert entry == Suppression(
        "a@x.com",
        SuppressionReason.HARD_BOUNCE,
        "ses",
        None,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert Suppression.from_proto(pb.Suppression(address="b@x.com")).created_at is None
    dropped = DroppedRecipient.from_proto(pb.DroppedRecipient(field="to[1]", address="b", reason=2))
    assert dropped == DroppedRecipient("to[1]", "b", SuppressionReason.COMPLAINT)


class Recorder:
    """A SuppressionService stub answering canned pages and recording the requests."""

    def __init__(self, aio: bool = False) -> None:
        self.aio = aio
        self.requests: list[Any] = []

    def _answer(self, value: Any) -> Any:
        if not self.aio:
            return value

        async def later() -> Any:
            return value

        return later()

    def ListSuppressions(self, request: Any, **_: Any) -> Any:
        self.requests.append(request)
        token = "" if request.page_token else "next"
        entry = pb.Suppression(address=f"{request.page_token or 'first'}@x.com", reason=3)
        return self._answer(
            pb.ListSuppressionsResponse(suppressions=[entry], next_page_token=token)
        )

    def AddSuppression(self, request: Any, **_: Any) -> Any:
        self.requests.append(request)
        return self._answer(pb.AddSuppressionResponse(created=True))

    def RemoveSuppression(self, request: Any, **_: Any) -> Any:
        self.requests.append(request)
        return self._answer(
            pb.RemoveSuppressionResponse(suppression=pb.Suppression(address=request.address))
        )


def test_the_sync_client_pages_and_sends_the_reason() -> None:
    with MailroomClient("localhost:1") as client:
        stub = client._suppressions = Recorder()  # type: ignore[assignment]
        found = list(client.list_suppressions(reason=SuppressionReason.COMPLAINT, page_size=1))
        assert [e.address for e in found] == ["first@x.com", "next@x.com"]
        assert client.add_suppression("a@x.com", reason=SuppressionReason.UNSUBSCRIBE) is True
        assert client.remove_suppression("a@x.com").address == "a@x.com"
    first, second, add, remove = stub.requests
    assert (first.reason, first.page_size, first.page_token) == (2, 1, "")
    assert second.page_token == "next"
    assert (add.address, add.reason) == ("a@x.com", 4)
    assert remove.address == "a@x.com"


def test_the_async_client_does_the_same() -> None:
    async def scenario() -> tuple[list[str], bool, list[Any]]:
        async with AsyncMailroomClient("localhost:1") as client:
            stub = client._suppressions = Recorder(aio=True)  # type: ignore[assignment]
            found = [e.address async for e in client.list_suppressions()]
            added = await client.add_suppression("a@x.com")
            await client.remove_suppression("a@x.com")
        return found, added, stub.requests

    found, added, requests = asyncio.run(scenario())
    assert found == ["first@x.com", "next@x.com"] and added is True
    assert requests[0].reason == 0 and requests[2].reason == 3


def test_a_batch_result_lists_its_dropped_recipients() -> None:
    from mailroom._convert import batch_response_from_proto
    from mailroom.v1 import mail_pb2

    response = batch_response_from_proto(
        mail_pb2.SendEmailBatchResponse(
            results=[
                mail_pb2.SendEmailBatchResult(
                    id="e1", dropped_recipients=[pb.DroppedRecipient(field="cc[0]", address="a")]
                ),
                mail_pb2.SendEmailBatchResult(id="e2"),
            ],
            accepted_count=2,
        )
    )
    assert response[0].dropped_recipients == [
        DroppedRecipient("cc[0]", "a", SuppressionReason.UNSPECIFIED)
    ]
    assert response[1].dropped_recipients == []
