"""The SDK's one boundary with gRPC: no ``grpc.RpcError`` escapes a client unmapped.

Each client makes every RPC through its ``_call`` wrapper, the one place where a ``grpc.RpcError``
becomes a :class:`mailroom.MailroomError`. Here a fake stub fails every RPC with every status code
and every public method of both clients must raise a mailroom error chained to the gRPC one.
No network: the channel is never connected, the stub is swapped for the fake.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

import mailroom
from mailroom import AsyncMailroomClient, MailroomClient, OutgoingEmail
from mailroom.errors import error_class_for
from mailroom.v1 import mail_pb2, suppressions_pb2, webhooks_pb2

RPC_NAMES = {
    m.name
    for file, service in [
        (mail_pb2, "MailService"),
        (suppressions_pb2, "SuppressionService"),
        (webhooks_pb2, "WebhookService"),
    ]
    for m in file.DESCRIPTOR.services_by_name[service].methods
}
ALL_CODES = list(grpc.StatusCode)  # OK too: even a nonsensical error must not escape raw
TARGET = "localhost:1"  # never dialled: the stub is replaced before any call


def _drain(emails: Any) -> Any:
    """Use up a listing: a list for the sync iterator, a coroutine making one for the async one."""
    if hasattr(emails, "__aiter__"):

        async def collect() -> list[Any]:
            return [email async for email in emails]

        return collect()
    return list(emails)


# How to call each public method that makes RPCs; the rest make none.
CALLS: dict[str, Callable[[Any], Any]] = {
    "send_email": lambda c: c.send_email("a@example.com", "t", "c"),
    "send_email_batch": lambda c: c.send_email_batch([OutgoingEmail("a@example.com", "t", "c")]),
    "list_emails": lambda c: _drain(c.list_emails(tag="t")),
    "list_emails_page": lambda c: c.list_emails_page(tag="t"),
    "get_email": lambda c: c.get_email("e-1"),
    "cancel_email": lambda c: c.cancel_email("e-1"),
    "wait_for_delivery": lambda c: c.wait_for_delivery("e-1", timeout=5),
    "list_suppressions": lambda c: _drain(c.list_suppressions()),
    "list_suppressions_page": lambda c: c.list_suppressions_page(),
    "add_suppression": lambda c: c.add_suppression("a@example.com"),
    "remove_suppression": lambda c: c.remove_suppression("a@example.com"),
    "create_webhook": lambda c: c.create_webhook("https://x.example/hook"),
    "list_webhooks": lambda c: c.list_webhooks(),
    "delete_webhook": lambda c: c.delete_webhook("w-1"),
    "list_webhook_deliveries": lambda c: c.list_webhook_deliveries(),
    "replay_webhook_delivery": lambda c: c.replay_webhook_delivery("d-1"),
}
NO_RPC = {"close", "from_env", "target"}


class FakeRpcError(grpc.RpcError):
    """What a sync stub raises: an RpcError with the ``grpc.Call`` accessors."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__()
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"injected {self._code.name}"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


class FakeStub:
    """A ``MailServiceStub`` whose every RPC records its call and then fails with ``error``.

    Sync stubs raise when called; asyncio ones return a call that raises when awaited (as
    ``grpc.aio`` does), or raise at once with ``eager``.
    """

    def __init__(self, error: grpc.RpcError, *, aio: bool = False, eager: bool = False) -> None:
        self.error = error
        self.aio = aio
        self.eager = eager
        self.calls: list[tuple[str, object, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in RPC_NAMES:
            raise AttributeError(name)

        def rpc(request: object, **kwargs: Any) -> Any:
            self.calls.append((name, request, kwargs))
            if not self.aio or self.eager:
                raise self.error
            return self._fail()

        return rpc

    async def _fail(self) -> None:
        raise self.error


def _aio_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """What a ``grpc.aio`` stub raises."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), f"injected {code.name}", None
    )


def _public_methods(cls: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(cls) if not n.startswith("_")}


@pytest.mark.parametrize("cls", [MailroomClient, AsyncMailroomClient], ids=lambda c: c.__name__)
def test_every_public_method_is_covered_here(cls):
    """A new public method must be added to CALLS (it makes RPCs) or NO_RPC (it makes none)."""
    assert _public_methods(cls) == set(CALLS) | NO_RPC


def _assert_mapped(err: BaseException, rpc_error: grpc.RpcError, code: grpc.StatusCode) -> None:
    assert isinstance(err, mailroom.MailroomError)
    assert not isinstance(err, grpc.RpcError)
    chain = []
    cause: BaseException | None = err
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    assert chain[-1] is rpc_error, "the gRPC error must be chained, not dropped"
    # The error from the one mapping is the one chained to the gRPC error (wait_for_delivery may
    # wrap it once more, as a DeliveryTimeout).
    assert type(chain[-2]) is error_class_for(code)


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("code", ALL_CODES, ids=lambda c: c.name)
def test_sync_client_raises_only_mailroom_errors(code, method):
    rpc_error = FakeRpcError(code)
    with MailroomClient(TARGET) as client:
        client._stub = client._suppressions = client._webhooks = FakeStub(rpc_error)  # type: ignore[assignment]
        with pytest.raises(mailroom.MailroomError) as info:
            CALLS[method](client)
        assert client._stub.calls, "the fake stub was never called"
    _assert_mapped(info.value, rpc_error, code)


@pytest.mark.parametrize("eager", [False, True], ids=["on-await", "on-call"])
@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("code", ALL_CODES, ids=lambda c: c.name)
def test_async_client_raises_only_mailroom_errors(code, method, eager):
    rpc_error = _aio_error(code)

    async def scenario() -> tuple[BaseException, FakeStub]:
        stub = FakeStub(rpc_error, aio=True, eager=eager)
        async with AsyncMailroomClient(TARGET) as client:
            client._stub = client._suppressions = client._webhooks = stub  # type: ignore[assignment]
            call: Awaitable[Any] = CALLS[method](client)
            with pytest.raises(mailroom.MailroomError) as info:
                await call
        return info.value, stub

    err, stub = asyncio.run(scenario())
    assert stub.calls, "the fake stub was never called"
    _assert_mapped(err, rpc_error, code)


@pytest.mark.parametrize(
    "method", ["get_email", "cancel_email", "send_email", "send_email_batch", "list_emails"]
)
def test_an_rpc_error_that_is_not_a_call_is_mapped_too(method):
    rpc_error = grpc.RpcError()
    with MailroomClient(TARGET) as client:
        client._stub = FakeStub(rpc_error)  # type: ignore[assignment]
        with pytest.raises(mailroom.Unknown) as info:
            CALLS[method](client)
    assert info.value.__cause__ is rpc_error


def test_sync_call_passes_the_deadline_and_the_api_key():
    with MailroomClient(TARGET, api_key="k", timeout=7) as client:
        stub = FakeStub(FakeRpcError(grpc.StatusCode.NOT_FOUND))
        client._stub = stub  # type: ignore[assignment]
        for timeout in (None, 2.5):
            with pytest.raises(mailroom.NotFound):
                client.get_email("e-1", timeout=timeout)
    assert [(name, kwargs) for name, _, kwargs in stub.calls] == [
        ("GetEmail", {"timeout": 7, "metadata": (("authorization", "Bearer k"),)}),
        ("GetEmail", {"timeout": 2.5, "metadata": (("authorization", "Bearer k"),)}),
    ]
    assert stub.calls[0][1] == mail_pb2.GetEmailRequest(id="e-1")


def test_async_call_passes_the_deadline_and_the_api_key():
    stub = FakeStub(_aio_error(grpc.StatusCode.NOT_FOUND), aio=True)

    async def scenario() -> None:
        async with AsyncMailroomClient(TARGET, api_key="k", timeout=7) as client:
            client._stub = stub  # type: ignore[assignment]
            for timeout in (None, 2.5):
                with pytest.raises(mailroom.NotFound):
                    await client.cancel_email("e-1", timeout=timeout)

    asyncio.run(scenario())
    assert [(name, kwargs) for name, _, kwargs in stub.calls] == [
        ("CancelEmail", {"timeout": 7, "metadata": (("authorization", "Bearer k"),)}),
        ("CancelEmail", {"timeout": 2.5, "metadata": (("authorization", "Bearer k"),)}),
    ]
    assert stub.calls[0][1] == mail_pb2.CancelEmailRequest(id="e-1")


def test_send_email_hands_its_idempotency_key_to_the_stub():
    with MailroomClient(TARGET) as client:
        stub = FakeStub(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
        client._stub = stub  # type: ignore[assignment]
        with pytest.raises(mailroom.Unavailable):
            client.send_email("a@example.com", "t", "c", idempotency_key="order-42")
    [(name, request, _)] = stub.calls
    assert name == "SendEmail"
    assert isinstance(request, mail_pb2.SendEmailRequest)
    assert request.idempotency_key == "order-42"
