"""Idempotent sends: one key, one email, one id; a different payload under a used key is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from core.store.documents import Email, IdempotencyKey, utcnow
from mailroom.v1 import mail_pb2

BIN = Path(sys.executable).parent


def request(key: str = "", subject: str = "Receipt", **fields) -> mail_pb2.SendEmailRequest:
    return mail_pb2.SendEmailRequest(
        to=["buyer@example.com"],
        title=subject,
        content="Thank you\n",
        from_address="shop@example.com",
        idempotency_key=key,
        **fields,
    )


def new_key() -> str:
    return f"order-{uuid.uuid4().hex}"


def body(subject: str = "Receipt") -> dict[str, object]:
    return {"to": ["buyer@example.com"], "title": subject, "content": "Thank you\n"}


def test_same_key_twice_in_sequence_gives_one_email_and_one_id(mail_client, real_store) -> None:
    key = new_key()

    first = mail_client.SendEmail(request(key), timeout=10).id
    second = mail_client.SendEmail(request(key), timeout=10).id

    assert first == second
    assert Email.objects(idempotency_key=key).count() == 1


def test_same_key_sent_concurrently_gives_one_email_and_one_id(mail_client, real_store) -> None:
    key = new_key()

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda _: mail_client.SendEmail(request(key), timeout=10).id, range(8)))

    assert len(set(ids)) == 1
    assert Email.objects(idempotency_key=key).count() == 1
    assert str(Email.objects(idempotency_key=key).first().id) == ids[0]


def test_different_payload_under_a_used_key_is_already_exists_naming_the_key(
    mail_client, real_store
) -> None:
    key = new_key()
    mail_client.SendEmail(request(key), timeout=10)

    with pytest.raises(grpc.RpcError) as refused:
        mail_client.SendEmail(request(key, subject="Another receipt"), timeout=10)

    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert key in refused.value.details()
    assert Email.objects(idempotency_key=key).count() == 1


def test_idempotency_key_header_through_envoy(envoy, real_store) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}

    first = envoy.request("POST", "/api/email", body(), headers=headers)
    again = envoy.request("POST", "/api/email", body(), headers=headers)
    other = envoy.request("POST", "/api/email", body("Another receipt"), headers=headers)

    assert (first[0], again[0]) == (201, 201), (first, again)
    assert first[2]["id"] == again[2]["id"]
    assert other[0] == 409, other
    assert key in other[2]["message"]
    assert Email.objects(idempotency_key=key).count() == 1


def test_idempotency_key_field_through_envoy(envoy, real_store) -> None:
    key = new_key()

    first = envoy.request("POST", "/api/email", {**body(), "idempotencyKey": key})
    again = envoy.request("POST", "/api/email", {**body(), "idempotencyKey": key})
    other = envoy.request("POST", "/api/email", {**body("Changed"), "idempotencyKey": key})

    assert (first[0], again[0], other[0]) == (201, 201, 409)
    assert first[2]["id"] == again[2]["id"]
    assert key in other[2]["message"]


def test_expired_keys_are_purged_and_the_key_can_be_used_again(
    mail_client, service_env, real_store
) -> None:
    key = new_key()
    first = mail_client.SendEmail(request(key), timeout=10).id
    # 24 hours later:
    IdempotencyKey.objects(key=key).update(set__expires_at=utcnow() - timedelta(seconds=1))

    proc = subprocess.run(
        [str(BIN / "mailroom-scheduler"), "--once", "purge"],
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["purged"] >= 1
    assert IdempotencyKey.objects(key=key).count() == 0
    second = mail_client.SendEmail(request(key), timeout=10).id
    assert second != first


def test_a_key_whose_first_insert_was_lost_still_names_a_stored_email(
    mail_client, worker, smtp_sink, real_store
) -> None:
    """The API died between binding the key and storing the email; the client retries."""
    from bson import ObjectId

    from server.servicer import _fingerprint

    key = new_key()
    reserved = str(ObjectId())
    now = utcnow()
    IdempotencyKey(
        key=key,
        fingerprint=_fingerprint(request(key)),
        email_id=reserved,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    ).save(force_insert=True)
    assert Email.objects(id=reserved).first() is None

    reply = mail_client.SendEmail(request(key), timeout=10)
    assert reply.id == reserved
    email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=reserved), timeout=5).email
    assert email.to == ["buyer@example.com"]
    smtp_sink.wait_for_count(1, timeout=20)
    # A second retry finds it stored and creates nothing new.
    assert mail_client.SendEmail(request(key), timeout=10).id == reserved
    assert Email.objects(idempotency_key=key).count() == 1
