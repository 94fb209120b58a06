"""The SDK clients (sync and asyncio) against a throwaway in-process gRPC server on 127.0.0.1.

The fake service (sdk_fake_service.py) validates like the real one (BadRequest details), honours
idempotency keys, and can be told to fail the next calls with a status, so retries, metadata and
error mapping are checked on the wire.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sdk_fake_service import FakeServer, MiB

import mailroom
from mailroom import (
    AsyncMailroomClient,
    EmailStatus,
    MailroomClient,
    RetryPolicy,
)

README = Path(__file__).resolve().parents[3] / "sdk" / "README.md"
FAST_RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    with MailroomClient(fake.target, retry=FAST_RETRY, timeout=5) as c:
        yield c


# --- calls and conversions -------------------------------------------------------------------


def test_send_get_cancel_round_trip(fake, client):
    fake.service.polls_until_sent = None
    email_id = client.send_email(["a@example.com"], "Subject", "Body", html="<p>Body</p>")
    email = client.get_email(email_id)
    assert email.id == email_id
    assert email.status is EmailStatus.QUEUED
    assert (email.to, email.title, email.html) == (["a@example.com"], "Subject", "<p>Body</p>")
    cancelled = client.cancel_email(email_id)
    assert cancelled.status is EmailStatus.CANCELLED
    with pytest.raises(mailroom.FailedPrecondition):
        client.cancel_email(email_id)


def test_send_at_and_idempotency_key_reach_the_server(fake, client):
    send_at = datetime.now(UTC) + timedelta(hours=1)
    client.send_email("a@example.com", "t", "c", send_at=send_at, idempotency_key="order-42")
    ((_, request, _),) = fake.service.calls_of("SendEmail")
    assert request.idempotency_key == "order-42"
    assert request.send_at.ToDatetime(tzinfo=UTC) == send_at


def test_a_naive_send_at_is_refused_before_anything_is_sent(fake, client):
    with pytest.raises(ValueError, match="timezone-aware"):
        client.send_email("a@example.com", "t", "c", send_at=datetime(2030, 1, 1))
    assert fake.service.calls == []


def test_unknown_id_raises_not_found_chained_to_the_rpc_error(client):
    with pytest.raises(mailroom.NotFound) as info:
        client.get_email("nope")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert "nope" in info.value.message
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_invalid_address_raises_invalid_argument_naming_the_field(fake, client):
    with pytest.raises(mailroom.InvalidArgument) as info:
        client.send_email(["ok@example.com", "not-an-address"], "t", "c")
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("to[1]", "not an email address")
    ]
    assert len(fake.service.calls) == 1  # INVALID_ARGUMENT is not retried


# --- metadata, TLS, environment -----------------------------------------------------------------


def test_the_api_key_is_sent_as_a_bearer_token(fake):
    with MailroomClient(fake.target, api_key="s3cret") as c:
        c.send_email("a@example.com", "t", "c")
        with pytest.raises(mailroom.NotFound):
            c.get_email("missing")
    assert [m.get("authorization") for _, _, m in fake.service.calls] == ["Bearer s3cret"] * 2


def test_no_authorization_header_without_an_api_key(fake, client):
    client.send_email("a@example.com", "t", "c")
    assert "authorization" not in fake.service.calls[0][2]


def test_from_env_reads_target_and_api_key_only_when_asked(fake, monkeypatch):
    monkeypatch.setenv("MAILROOM_TARGET", fake.target)
    monkeypatch.setenv("MAILROOM_API_KEY", "from-env")
    with MailroomClient.from_env() as c:
        assert c.target == fake.target
        c.send_email("a@example.com", "t", "c")
    with MailroomClient.from_env(api_key="explicit") as c:
        c.send_email("a@example.com", "t", "c")
    with MailroomClient(fake.target) as c:  # the constructor ignores the environment
        c.send_email("a@example.com", "t", "c")
    keys = [m.get("authorization") for _, _, m in fake.service.calls]
    assert keys == ["Bearer from-env", "Bearer explicit", None]


def test_from_env_defaults_to_localhost(monkeypatch):
    monkeypatch.delenv("MAILROOM_TARGET", raising=False)
    with MailroomClient.from_env() as c:
        assert c.target == "localhost:50051"


def _self_signed(tmp_path: Path) -> tuple[bytes, bytes]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return key.read_bytes(), cert.read_bytes()


def test_tls_with_root_certificates(tmp_path):
    key, cert = _self_signed(tmp_path)
    server = FakeServer(grpc.ssl_server_credentials([(key, cert)])).start()
    try:
        with MailroomClient(server.target, root_certificates=cert, api_key="k", timeout=5) as c:
            email_id = c.send_email("a@example.com", "t", "c")
            assert c.get_email(email_id).id == email_id
        assert server.service.calls[0][2]["authorization"] == "Bearer k"
        # A plaintext client cannot talk to the TLS server.
        with (
            MailroomClient(server.target, retry=None, timeout=5) as plain,
            pytest.raises(mailroom.Unavailable),
        ):
            plain.send_email("a@example.com", "t", "c")
    finally:
        server.stop()


# --- retries and idempotency ---------------------------------------------------------------------


def test_unavailable_is_retried_with_the_same_idempotency_key(fake, client):
    fake.service.fail_next = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
    email_id = client.send_email("a@example.com", "t", "c")
    attempts = fake.service.calls_of("SendEmail")
    assert len(attempts) == 3
    keys = {request.idempotency_key for _, request, _ in attempts}
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    assert list(fake.service.emails) == [email_id]


def test_retries_give_up_with_unavailable(fake, client):
    fake.service.fail_next = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(mailroom.Unavailable) as info:
        client.get_email("any")
    assert len(fake.service.calls) == FAST_RETRY.max_attempts
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_retries_can_be_disabled(fake):
    fake.service.fail_next = [grpc.StatusCode.UNAVAILABLE]
    with MailroomClient(fake.target, retry=None) as c, pytest.raises(mailroom.Unavailable):
        c.send_email("a@example.com", "t", "c")
    assert len(fake.service.calls) == 1


def test_other_errors_are_not_retried(fake, client):
    fake.service.fail_next = [grpc.StatusCode.INTERNAL]
    with pytest.raises(mailroom.Internal):
        client.send_email("a@example.com", "t", "c")
    assert len(fake.service.calls) == 1


def test_no_server_gives_unavailable_within_the_deadline():
    server = FakeServer().start()
    target = server.target
    server.stop()
    # Unavailable, not DeadlineExceeded: the retries gave up before the 10 s deadline.
    with (
        MailroomClient(target, retry=FAST_RETRY, timeout=10) as c,
        pytest.raises(mailroom.Unavailable),
    ):
        c.send_email("a@example.com", "t", "c")


def test_a_call_made_while_the_server_restarts_succeeds_with_the_default_retries(fake):
    with MailroomClient(fake.target) as c:
        before = c.send_email("a@example.com", "t", "c")  # connected before the outage
        # The channel goes TRANSIENT_FAILURE only when a call fails to connect (after the stop
        # it is IDLE until a call comes): the call below has met the outage.
        met_the_outage = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                met_the_outage.set()

        c._channel.subscribe(watch)
        fake.stop()
        result: dict[str, object] = {}

        def call() -> None:
            try:
                result["id"] = c.send_email("a@example.com", "t", "c", timeout=15)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        assert met_the_outage.wait(10), "the call never tried to connect during the outage"
        fake.start()  # the retries must ride out the outage
        thread.join(20)
        assert not thread.is_alive()
    assert "error" not in result, result
    assert list(fake.service.emails) == [before, result["id"]]


# --- limits and waiting ----------------------------------------------------------------------


def test_emails_larger_than_grpcs_4_mib_default_go_both_ways(fake, client):
    body = "x" * (11 * MiB)
    email_id = client.send_email("a@example.com", "big", body)
    assert client.get_email(email_id).content == body


def test_wait_for_delivery_polls_until_sent(fake, client):
    fake.service.polls_until_sent = 3
    email_id = client.send_email("a@example.com", "t", "c")
    email = client.wait_for_delivery(email_id, timeout=10)
    assert email.status is EmailStatus.SENT
    assert len(fake.service.calls_of("GetEmail")) == 3


def test_wait_for_delivery_returns_cancelled_emails_too(fake, client):
    fake.service.polls_until_sent = None
    email_id = client.send_email("a@example.com", "t", "c")
    client.cancel_email(email_id)
    assert client.wait_for_delivery(email_id, timeout=5).status is EmailStatus.CANCELLED


def test_wait_for_delivery_times_out_with_the_last_seen_email(fake, client):
    fake.service.polls_until_sent = None
    email_id = client.send_email("a@example.com", "t", "c")
    pool = futures.ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    waiting = pool.submit(client.wait_for_delivery, email_id, timeout=0.8)
    try:
        # It gives up by itself: the test waits at most 10 s for that, not for ever.
        with pytest.raises(mailroom.DeliveryTimeout) as info:
            waiting.result(timeout=10)
    finally:
        pool.shutdown(wait=False)
    assert time.monotonic() - started >= 0.8  # it waited its timeout out
    assert info.value.email is not None
    assert info.value.email.status is EmailStatus.QUEUED
    assert len(fake.service.calls_of("GetEmail")) >= 2  # it polled, with pauses


def test_wait_for_delivery_of_an_unknown_email_raises_not_found(client):
    with pytest.raises(mailroom.NotFound):
        client.wait_for_delivery("nope", timeout=5)


def _readme_quick_start() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "sdk/README.md has no python code block"
    return match.group(1)


def test_every_readme_python_example_is_valid_python():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) >= 6  # quick start, client, attachments, listing (2), batches, errors
    for number, code in enumerate(blocks):
        compile(code, f"README.md python block {number}", "exec")


def test_the_readme_quick_start_is_five_lines_and_runs(fake, monkeypatch, capsys):
    code = _readme_quick_start()
    assert len(code.strip().splitlines()) <= 5
    monkeypatch.setenv("MAILROOM_TARGET", fake.target)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "SENT"
    assert len(fake.service.emails) == 1


# --- the asyncio client ---------------------------------------------------------------------


def test_async_client_round_trip_and_errors(fake):
    fake.service.polls_until_sent = 2

    async def scenario() -> None:
        async with AsyncMailroomClient(fake.target, api_key="k", retry=FAST_RETRY) as c:
            fake.service.fail_next = [grpc.StatusCode.UNAVAILABLE]
            email_id = await c.send_email("a@example.com", "t", "c")
            email = await c.wait_for_delivery(email_id, timeout=10)
            assert email.status is EmailStatus.SENT
            with pytest.raises(mailroom.InvalidArgument) as info:
                await c.send_email(["bad"], "t", "c")
            assert [v.field for v in info.value.violations] == ["to[0]"]
            with pytest.raises(mailroom.NotFound):
                await c.cancel_email("nope")

    asyncio.run(scenario())
    sends = fake.service.calls_of("SendEmail")
    assert len({r.idempotency_key for _, r, _ in sends[:2]}) == 1  # the retry reused the key
    assert {m["authorization"] for _, _, m in fake.service.calls} == {"Bearer k"}


def test_async_wait_for_delivery_times_out(fake):
    fake.service.polls_until_sent = None

    async def scenario() -> mailroom.DeliveryTimeout:
        async with AsyncMailroomClient(fake.target) as c:
            email_id = await c.send_email("a@example.com", "t", "c")
            with pytest.raises(mailroom.DeliveryTimeout) as info:
                await c.wait_for_delivery(email_id, timeout=0.5)
            return info.value

    err = asyncio.run(scenario())
    assert err.email is not None
    assert err.email.status is EmailStatus.QUEUED


def test_async_no_server_gives_unavailable():
    server = FakeServer().start()
    target = server.target
    server.stop()

    async def scenario() -> None:
        async with AsyncMailroomClient(target, retry=FAST_RETRY, timeout=10) as c:
            await c.get_email("any")

    with pytest.raises(mailroom.Unavailable):
        asyncio.run(scenario())
