"""ProviderEventService on a real gRPC server: no API key needed, headers read from metadata."""

from __future__ import annotations

import json

import grpc
import pytest
from google.api import httpbody_pb2
from provider_samples import SendGridSigner, sendgrid_events

from core.provider_event_counts import SharedCounts
from core.settings import Settings
from core.store.events import StoredProviderEvent
from mailroom.v1 import events_pb2, events_pb2_grpc, mail_pb2, mail_pb2_grpc
from server.main import build_server


@pytest.fixture
def served(fake_store: None, fake_redis, monkeypatch: pytest.MonkeyPatch):
    # The cluster-wide provider event counts go to an in-memory hash, not a local Redis.
    monkeypatch.setattr(
        SharedCounts, "from_url", classmethod(lambda cls, *_a, **_k: cls(fake_redis))
    )
    signer = SendGridSigner.new()
    settings = Settings(
        _env_file=None,
        grpc_port=0,
        grpc_host="127.0.0.1",
        api_keys=["the-key"],
        api_metrics_port=0,
        provider_events={"sendgrid_public_key": signer.public_key},
    )
    server, port, _health, servicers = build_server(settings, queue=None)  # type: ignore[arg-type]
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, signer
    finally:
        channel.close()
        server.stop(None)
        for servicer in servicers:
            getattr(servicer, "close", lambda: None)()


def test_provider_events_need_no_api_key_and_read_headers_from_metadata(served) -> None:
    channel, signer = served
    body = json.dumps(sendgrid_events("abc", "ann@example.com")).encode()
    request = events_pb2.ReceiveProviderEventsRequest(
        provider="sendgrid",
        body=httpbody_pb2.HttpBody(content_type="application/json", data=body),
    )
    stub = events_pb2_grpc.ProviderEventServiceStub(channel)
    metadata = [(k.lower(), v) for k, v in signer.headers(body).items()]
    assert stub.ReceiveProviderEvents(request, metadata=metadata).stored == 3
    assert StoredProviderEvent.objects.count() == 3

    with pytest.raises(grpc.RpcError) as refused:
        stub.ReceiveProviderEvents(request)  # no signature headers
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "API key" not in (refused.value.details() or "")

    # MailService still needs the key.
    with pytest.raises(grpc.RpcError) as keyless:
        mail_pb2_grpc.MailServiceStub(channel).GetEmail(mail_pb2.GetEmailRequest(id="x"))
    assert keyless.value.code() == grpc.StatusCode.UNAUTHENTICATED
