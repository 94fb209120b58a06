"""What a server sees of the SDK: the ``user-agent`` of its calls names the SDK and its version.

A small gRPC server on a free port stands in for the API: it records each call's metadata and
answers NOT_FOUND. The SDK's clients reach it over TCP as they would the real API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import mailroom
from mailroom import AsyncMailroomClient, MailroomClient
from mailroom.v1 import mail_pb2_grpc

UNKNOWN_ID = "0" * 24


class RecordingService(mail_pb2_grpc.MailServiceServicer):
    def __init__(self) -> None:
        self.user_agents: list[str] = []
        self._lock = threading.Lock()

    def GetEmail(self, request, context):
        metadata = dict(context.invocation_metadata())
        with self._lock:
            self.user_agents.append(metadata.get("user-agent", ""))
        context.abort(grpc.StatusCode.NOT_FOUND, f"no email {request.id}")


@pytest.fixture
def recording_server() -> Iterator[tuple[str, RecordingService]]:
    service = RecordingService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    mail_pb2_grpc.add_MailServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(grace=None)


def test_the_sync_client_names_the_sdk_and_its_version(recording_server):
    target, service = recording_server
    with (
        MailroomClient(target, retry=None, timeout=30) as client,
        pytest.raises(mailroom.NotFound),
    ):
        client.get_email(UNKNOWN_ID)
    assert len(service.user_agents) == 1
    assert service.user_agents[0].startswith(f"mailroom-sdk/{mailroom.__version__} ")
    # gRPC's own agent follows ours.
    assert "grpc-python/" in service.user_agents[0]


def test_the_async_client_names_the_sdk_and_its_version(recording_server):
    target, service = recording_server

    async def call() -> None:
        async with AsyncMailroomClient(target, retry=None, timeout=30) as client:
            with pytest.raises(mailroom.NotFound):
                await client.get_email(UNKNOWN_ID)

    asyncio.run(call())
    assert len(service.user_agents) == 1
    assert service.user_agents[0].startswith(f"mailroom-sdk/{mailroom.__version__} ")


def test_a_callers_own_user_agent_wins(recording_server):
    target, service = recording_server
    options = [("grpc.primary_user_agent", "billing/2.3")]
    with (
        MailroomClient(target, retry=None, timeout=30, options=options) as client,
        pytest.raises(mailroom.NotFound),
    ):
        client.get_email(UNKNOWN_ID)
    assert service.user_agents[0].startswith("billing/2.3 ")
    assert "mailroom-sdk" not in service.user_agents[0]
