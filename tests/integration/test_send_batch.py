"""SendEmailBatch end to end: REST through Envoy and gRPC → one bulk write → one enqueue → SMTP."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from core.queue import DeliveryQueue
from core.store.carried import unpack
from core.store.documents import Email, utcnow
from helpers import queued_copy, rest_violations, wait_until
from mailroom.v1 import mail_pb2

DEADLINE = 60.0


def marker() -> str:
    return uuid.uuid4().hex[:12]


def item(tag: str, n: int, **fields: object) -> dict[str, object]:
    """One email of a REST batch, recognisable in the sink by its title."""
    return {"to": [f"r{n}@example.com"], "title": f"batch {tag} #{n}", "content": "Hello", **fields}


def ids_in_sink(sink, tag: str) -> list[str]:
    return [
        m.message["X-Mailroom-Id"] for m in sink.messages if f"batch {tag} " in m.message["Subject"]
    ]


def stored(emails: list[dict[str, object]]) -> int:
    """How many of these REST emails are in the store (FerretDB has no regex options)."""
    return Email.objects(subject__in=[e["title"] for e in emails]).count()


def test_rest_batch_answers_each_email_and_delivers_only_the_valid(
    envoy, worker, smtp_sink, real_store
) -> None:
    tag = marker()
    emails = [item(tag, n) for n in range(5)]
    emails.insert(2, item(tag, 90, to=["not an address"]))
    emails.insert(5, item(tag, 91, title=""))

    status, _, reply = envoy.request("POST", "/api/emails:batch", {"emails": emails})

    assert status == 200, reply
    results = reply["results"]
    assert len(results) == 7
    accepted = [r.get("id", "") for r in results]
    assert [bool(i) for i in accepted] == [True, True, False, True, True, False, True]
    assert rest_violations(results[2]["error"]) == ["emails[2].to[0]"]
    assert rest_violations(results[5]["error"]) == ["emails[5].title"]
    assert results[2]["error"]["code"] == code_pb2.INVALID_ARGUMENT
    assert reply.get("accepted_count", reply.get("acceptedCount")) == 5
    assert reply.get("refused_count", reply.get("refusedCount")) == 2

    valid = [i for i in accepted if i]
    wait_until(
        lambda: len(ids_in_sink(smtp_sink, tag)) >= 5,
        timeout=DEADLINE,
        message="the five valid emails delivered",
    )
    assert sorted(ids_in_sink(smtp_sink, tag)) == sorted(valid)
    # Stored in request order, each as sent: the n-th valid id is the n-th valid email.
    for email_id, n in zip(valid, range(5), strict=True):
        assert Email.objects(id=email_id).first().subject == f"batch {tag} #{n}"


def test_rest_batch_with_no_valid_email_is_400_with_every_violation(envoy, real_store) -> None:
    tag = marker()
    emails = [item(tag, 0, to=["nope"]), item(tag, 1, content="", title=" ")]

    status, _, reply = envoy.request("POST", "/api/emails:batch", {"emails": emails})

    assert status == 400, reply
    assert reply["code"] == code_pb2.INVALID_ARGUMENT
    assert rest_violations(reply) == ["emails[0].to[0]", "emails[1].title", "emails[1].content"]
    assert stored(emails) == 0


@pytest.mark.parametrize("count", [0, 101])
def test_rest_batch_empty_or_over_the_limit_is_400_naming_emails(envoy, real_store, count) -> None:
    tag = marker()
    emails = [item(tag, n) for n in range(count)]

    status, _, reply = envoy.request("POST", "/api/emails:batch", {"emails": emails})

    assert status == 400, reply
    assert rest_violations(reply) == ["emails"]
    assert stored(emails) == 0


def grpc_item(tag: str, n: int, **fields: object) -> mail_pb2.SendEmailRequest:
    return mail_pb2.SendEmailRequest(
        to=[f"r{n}@example.com"], title=f"batch {tag} #{n}", content="Hello", **fields
    )


def test_grpc_batch_retried_with_keys_gives_the_same_ids_and_one_delivery_each(
    mail_client, worker, smtp_sink, real_store
) -> None:
    tag = marker()
    send_at = Timestamp()
    send_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    request = mail_pb2.SendEmailBatchRequest(
        emails=[
            grpc_item(tag, 0, idempotency_key=f"{tag}-0"),
            grpc_item(tag, 1, idempotency_key=f"{tag}-1", send_at=send_at),
            grpc_item(tag, 2),
        ]
    )

    first = mail_client.SendEmailBatch(request, timeout=30)
    again = mail_client.SendEmailBatch(request, timeout=30)

    assert first.accepted_count == 3
    first_ids = [r.id for r in first.results]
    again_ids = [r.id for r in again.results]
    # Keyed emails are the same; the one without a key is a new email.
    assert again_ids[:2] == first_ids[:2]
    assert again_ids[2] != first_ids[2]
    wait_until(
        lambda: len(ids_in_sink(smtp_sink, tag)) >= 4,
        timeout=DEADLINE,
        message="four emails delivered",
    )

    def all_sent() -> bool:
        ids = {*first_ids, *again_ids}
        return Email.objects(id__in=list(ids), status="SENT").count() == len(ids)

    wait_until(all_sent, timeout=DEADLINE, message="all four SENT")
    assert sorted(ids_in_sink(smtp_sink, tag)) == sorted({*first_ids, *again_ids})
    scheduled = Email.objects(id=first_ids[1]).first()
    assert scheduled.sent_at >= scheduled.send_at  # the delayed message waited for send_at


def test_grpc_batch_changed_payload_under_a_used_key_is_refused_alone(
    mail_client, real_store
) -> None:
    tag = marker()
    key = f"{tag}-k"
    mail_client.SendEmail(grpc_item(tag, 0, idempotency_key=key), timeout=30)

    reply = mail_client.SendEmailBatch(
        mail_pb2.SendEmailBatchRequest(
            emails=[grpc_item(tag, 1), grpc_item(tag, 9, idempotency_key=key)]
        ),
        timeout=30,
    )

    assert reply.results[0].id
    assert reply.results[1].error.code == code_pb2.ALREADY_EXISTS
    assert key in reply.results[1].error.message
    assert Email.objects(idempotency_key=key).count() == 1


def test_grpc_batch_with_no_valid_email_is_invalid_argument_with_details(mail_client) -> None:
    request = mail_pb2.SendEmailBatchRequest(
        emails=[mail_pb2.SendEmailRequest(to=["x"], title="t", content="c")]
    )

    with pytest.raises(grpc.RpcError) as refused:
        mail_client.SendEmailBatch(request, timeout=30)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["emails[0].to[0]"]


def test_rest_batch_with_an_idempotency_key_header_is_400_naming_it(envoy, real_store) -> None:
    tag = marker()
    emails = [item(tag, 0)]

    status, _, reply = envoy.request(
        "POST", "/api/emails:batch", {"emails": emails}, headers={"Idempotency-Key": tag}
    )

    assert status == 400, reply
    assert rest_violations(reply) == ["idempotency_key"]
    assert stored(emails) == 0


def test_rest_batch_retried_with_keys_answers_the_same_ids(envoy, real_store) -> None:
    tag = marker()
    emails = [item(tag, n, idempotencyKey=f"{tag}-{n}") for n in range(3)]

    first = envoy.request("POST", "/api/emails:batch", {"emails": emails})
    again = envoy.request("POST", "/api/emails:batch", {"emails": emails})

    assert (first[0], again[0]) == (200, 200), (first, again)
    ids = [r["id"] for r in first[2]["results"]]
    assert [r["id"] for r in again[2]["results"]] == ids
    assert stored(emails) == 3


def test_a_pipelined_enqueue_puts_messages_where_one_by_one_enqueues_do(
    redis_server, redis_client
) -> None:
    name = f"batchq{marker()}"
    queue = DeliveryQueue(redis_server.url, name, timeout_seconds=5)
    try:
        queue.enqueue_delivery("one", delay_ms=None)
        queue.enqueue_delivery("two", delay_ms=60_000)
        queue.enqueue_deliveries([("three", None), ("four", 60_000)])
    finally:
        queue.close()

    def messages(queue_name: str) -> dict[str, dict]:
        ids = [i.decode() for i in redis_client.lrange(f"dramatiq:{queue_name}", 0, -1)]
        bodies = redis_client.hmget(f"dramatiq:{queue_name}.msgs", ids)
        return {json.loads(b)["args"][0]: json.loads(b) for b in bodies}

    now = messages(name)
    later = messages(f"{name}.DQ")
    assert sorted(now) == ["one", "three"]
    assert sorted(later) == ["four", "two"]
    # The same message shape either way, but for ids and times.
    volatile = {"message_id", "message_timestamp", "options"}

    def strip(message: dict) -> dict:
        return {k: v for k, v in message.items() if k not in volatile}

    assert strip(now["three"]) == {**strip(now["one"]), "args": ["three"]}
    assert strip(later["four"]) == {**strip(later["two"]), "args": ["four"]}
    options = {"redis_message_id", "eta"}
    assert set(later["four"]["options"]) == set(later["two"]["options"]) == options
    assert abs(later["four"]["options"]["eta"] - later["two"]["options"]["eta"]) < 30_000


def test_each_message_of_a_batch_carries_its_email(start_worker, mail_client, redis_client):
    """No worker yet: every waiting message holds the email as stored, the scheduled one none."""
    tag = marker()
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    requests = [
        mail_pb2.SendEmailRequest(to=[f"r{n}@example.com"], title=f"batch {tag} #{n}", content="x")
        for n in range(3)
    ]
    requests.append(
        mail_pb2.SendEmailRequest(
            to=["r9@example.com"], title=f"batch {tag} later", content="x", send_at=later
        )
    )
    reply = mail_client.SendEmailBatch(mail_pb2.SendEmailBatchRequest(emails=requests), timeout=10)
    ids = [r.id for r in reply.results]
    assert all(ids), reply

    copies = {i: queued_copy(redis_client, i) for i in ids[:3]}
    for n, email_id in enumerate(ids[:3]):
        email = unpack(copies[email_id] or "", email_id, utcnow())
        assert email is not None, email_id
        assert (email.subject, email.to) == (f"batch {tag} #{n}", [f"r{n}@example.com"])
    # The scheduled email's message waits on the delay queue without a copy (too old by then).
    delayed = [json.loads(raw) for raw in redis_client.hvals("dramatiq:mail.DQ.msgs")]
    scheduled = [m for m in delayed if m["args"] == [ids[3]]]
    assert len(scheduled) == 1
    assert "stored_email" not in scheduled[0]["options"]
