"""send_email_batch: per-email keys, results in order, refused emails as errors (fake server)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sdk_fake_service import FakeServer

import mailroom
from mailroom import (
    AsyncMailroomClient,
    Attachment,
    BatchResult,
    MailroomClient,
    OutgoingEmail,
    RetryPolicy,
)
from mailroom._convert import batch_response_from_proto, build_batch_request
from mailroom.errors import error_from_status
from mailroom.v1 import mail_pb2

FAST_RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.2)


def _status(code: int, message: str, *violations: tuple[str, str]) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if violations:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        status.details.append(detail)
    return status


# --- the request and the response ----------------------------------------------------------------


def test_each_email_gets_its_own_key_unless_it_has_one():
    request = build_batch_request(
        [
            OutgoingEmail("a@example.com", "t", "c"),
            OutgoingEmail("b@example.com", "t", "c", idempotency_key="order-7"),
            OutgoingEmail(["c@example.com"], "t", "c", tags="x", metadata={"k": "v"}),
        ]
    )
    keys = [email.idempotency_key for email in request.emails]
    assert keys[1] == "order-7"
    assert uuid.UUID(keys[0]).version == 4 and uuid.UUID(keys[2]).version == 4
    assert keys[0] != keys[2]
    assert list(request.emails[2].to) == ["c@example.com"]
    assert list(request.emails[2].tags) == ["x"]
    assert dict(request.emails[2].metadata) == {"k": "v"}


def test_an_outgoing_email_lands_in_the_fields_send_email_uses():
    email = OutgoingEmail(
        "a@example.com",
        "Subject",
        "Body",
        cc="c@example.com",
        html="<p>Body</p>",
        from_="shop@example.com",
        reply_to="help@example.com",
        attachments=[Attachment("a.txt", b"abc")],
        headers={"X-Campaign": "spring"},
    )
    [request] = build_batch_request([email]).emails
    assert (request.title, request.content, request.html) == ("Subject", "Body", "<p>Body</p>")
    assert (request.from_address, request.reply_to) == ("shop@example.com", "help@example.com")
    assert list(request.cc) == ["c@example.com"]
    assert [(a.filename, a.content) for a in request.attachments] == [("a.txt", b"abc")]
    assert dict(request.headers) == {"X-Campaign": "spring"}


def test_a_bad_item_is_refused_before_sending_naming_its_index():
    with pytest.raises(ValueError, match=r"emails\[1\]: send_at must be timezone-aware"):
        build_batch_request(
            [
                OutgoingEmail("a@example.com", "t", "c"),
                OutgoingEmail("a@example.com", "t", "c", send_at=datetime(2030, 1, 1)),
            ]
        )
    with pytest.raises(TypeError, match=r"emails\[0\]: batch items must be OutgoingEmail"):
        build_batch_request([{"to": "a@example.com"}])  # type: ignore[list-item]


def test_the_response_keeps_the_order_and_maps_each_error():
    response = batch_response_from_proto(
        mail_pb2.SendEmailBatchResponse(
            results=[
                mail_pb2.SendEmailBatchResult(id="e-0"),
                mail_pb2.SendEmailBatchResult(
                    error=_status(
                        code_pb2.INVALID_ARGUMENT, "invalid", ("emails[1].to[0]", "bad address")
                    )
                ),
                mail_pb2.SendEmailBatchResult(
                    error=_status(code_pb2.ALREADY_EXISTS, "key used for another email")
                ),
            ],
            accepted_count=1,
            refused_count=2,
        )
    )
    assert (len(response), response.accepted_count, response.refused_count) == (3, 1, 2)
    assert response[0] == BatchResult(index=0, id="e-0")
    assert response[0].accepted
    assert [r.index for r in response.refused] == [1, 2]
    assert [r.index for r in response.accepted] == [0]
    invalid = response[1].error
    assert isinstance(invalid, mailroom.InvalidArgument)
    assert [(v.field, v.description) for v in invalid.violations] == [
        ("emails[1].to[0]", "bad address")
    ]
    assert response[1].id is None and not response[1].accepted
    assert isinstance(response[2].error, mailroom.AlreadyExists)
    assert response[2].error.message == "key used for another email"
    assert [r.index for r in response] == [0, 1, 2]
    assert list(response[1:]) == response.results[1:]


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (code_pb2.INVALID_ARGUMENT, mailroom.InvalidArgument),
        (code_pb2.PERMISSION_DENIED, mailroom.PermissionDenied),
        (code_pb2.RESOURCE_EXHAUSTED, mailroom.ResourceExhausted),
        (code_pb2.OK, mailroom.Unknown),  # an error that says OK is still an error
        (999, mailroom.Unknown),  # a code this SDK does not know
    ],
)
def test_a_status_in_a_response_maps_to_its_error_class(code, cls):
    err = error_from_status(_status(code, ""))
    assert type(err) is cls
    assert err.message  # never empty: the code's name at least


# --- on the wire -----------------------------------------------------------------------------


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    with MailroomClient(fake.target, retry=FAST_RETRY, timeout=5) as c:
        yield c


def test_one_invalid_email_is_refused_and_the_others_sent(fake, client):
    response = client.send_email_batch(
        [
            OutgoingEmail("a@example.com", "t", "c", attachments=[Attachment("a.txt", b"a")]),
            OutgoingEmail(["ok@example.com", "not-an-address"], "t", "c"),
            OutgoingEmail("b@example.com", "t", "c", tags=["x"]),
        ]
    )
    assert (response.accepted_count, response.refused_count) == (2, 1)
    assert [r.accepted for r in response] == [True, False, True]
    error = response[1].error
    assert isinstance(error, mailroom.InvalidArgument)
    assert [v.field for v in error.violations] == ["emails[1].to[1]"]
    sent = client.get_email(response[2].id)
    assert sent.tags == ["x"]
    assert client.get_email(response[0].id).attachments[0].content == b"a"
    assert len(fake.service.calls_of("SendEmailBatch")) == 1


def test_a_batch_with_no_valid_email_raises_invalid_argument_naming_each(fake, client):
    with pytest.raises(mailroom.InvalidArgument) as info:
        client.send_email_batch(
            [OutgoingEmail("nope", "t", "c"), OutgoingEmail(["a@example.com", "bad"], "t", "c")]
        )
    assert [v.field for v in info.value.violations] == ["emails[0].to[0]", "emails[1].to[1]"]
    assert fake.service.emails == {}


def test_a_retried_batch_repeats_every_key_and_sends_each_email_once(fake, client):
    fake.service.fail_next = [grpc.StatusCode.UNAVAILABLE]
    response = client.send_email_batch(
        [OutgoingEmail("a@example.com", "t", "c"), OutgoingEmail("b@example.com", "t", "c")]
    )
    attempts = [request for _, request, _ in fake.service.calls_of("SendEmailBatch")]
    assert len(attempts) == 2
    assert attempts[0] == attempts[1]  # the same keys on the retry
    assert sorted(fake.service.emails) == sorted(r.id for r in response)


def test_resending_the_same_keys_answers_the_same_ids(fake, client):
    batch = [
        OutgoingEmail(f"u{i}@example.com", "t", "c", idempotency_key=f"k{i}") for i in range(3)
    ]
    first = client.send_email_batch(batch)
    again = client.send_email_batch(batch)
    assert [r.id for r in again] == [r.id for r in first]
    assert len(fake.service.emails) == 3


def test_the_async_client_sends_a_batch(fake):
    async def scenario() -> mailroom.BatchResponse:
        async with AsyncMailroomClient(fake.target, retry=FAST_RETRY) as c:
            response = await c.send_email_batch(
                [OutgoingEmail("a@example.com", "t", "c"), OutgoingEmail("bad", "t", "c")]
            )
            with pytest.raises(mailroom.InvalidArgument):
                await c.send_email_batch([])
            return response

    response = asyncio.run(scenario())
    assert [r.accepted for r in response] == [True, False]
    assert isinstance(response[1].error, mailroom.InvalidArgument)
    assert list(fake.service.emails) == [response[0].id]
