"""Issue 11 end to end: each row of its table, the sender policy, error bodies and a REST fuzz.

REST goes through Envoy's transcoder, gRPC straight to the API. What is refused is never stored
(the documents are counted); nothing answers 5xx to bad input; no error body carries an internal
address or a stack trace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator

import grpc
import pytest

from core.store.documents import Email, Status
from helpers import SmtpSink, grpc_violations, rest_violations, wait_until
from mailroom.v1 import mail_pb2, mail_pb2_grpc

BASE = {"to": ["a@example.com"], "title": "hi", "content": "hello"}

# An internal address (IP, host:port) or a Python stack trace in an error body.
LEAK = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|:\d{4,5}\b|Traceback|File \"|\.py\b")


def count() -> int:
    return Email.objects.count()


def serving(envoy) -> None:
    """Wait until the API answers through Envoy again (after the store was paused or stopped)."""
    wait_until(
        lambda: envoy.request("GET", f"/api/email/{'0' * 24}")[0] == 404,
        timeout=60,
        interval=0.5,
        message="the API answers through Envoy",
    )


def no_leak(text: object) -> None:
    flat = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    assert not LEAK.search(flat), f"internal details in an error body: {flat[:300]}"


# The rows of issue 11's table that must answer 400 naming a field.
REFUSED = [
    ({"title": "a\u2028b"}, "title"),
    ({"title": "a\u0085b"}, "title"),
    ({"title": "a\x0bb"}, "title"),
    ({"title": "a\x0cb"}, "title"),
    ({"to": ["Bob\x1c <bob@example.com>"]}, "to[0]"),
    ({"cc": ["Bob\x1d <bob@example.com>"]}, "cc[0]"),
    ({"to": ["Bob\x1e <bob@example.com>"]}, "to[0]"),
    ({"to": ["a@x.com, b@x.com"]}, "to[0]"),
    ({"title": "x" * 1_000_000}, "title"),
    ({"title": "a\x00b"}, "title"),
    ({"from": "Bob\x00 <bob@example.com>"}, "from"),
    ({"content": "a\x00b"}, "content"),
    ({"html": "<p>\x00</p>"}, "html"),
]


@pytest.mark.parametrize(("override", "field"), REFUSED)
def test_rest_refuses_the_row_naming_its_field(envoy, real_store, override, field):
    before = count()
    status, _, body = envoy.request("POST", "/api/email", {**BASE, **override})
    assert status == 400, body
    assert field in rest_violations(body)
    if override.get("to") == ["a@x.com, b@x.com"]:
        assert "one address per entry" in body["message"]
    no_leak(body)
    assert count() == before


@pytest.mark.parametrize(("override", "field"), REFUSED)
def test_grpc_refuses_the_row_naming_its_field(mail_client, real_store, override, field):
    fields = {**BASE, **override}
    if "from" in fields:
        fields["from_address"] = fields.pop("from")
    before = count()
    with pytest.raises(grpc.RpcError) as info:
        mail_client.SendEmail(mail_pb2.SendEmailRequest(**fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in grpc_violations(info.value)
    no_leak(info.value.details())
    assert count() == before


@pytest.fixture
def plain_relay() -> Iterator[SmtpSink]:
    """A relay that does not offer SMTPUTF8, like most."""
    sink = SmtpSink(smtputf8=False).start()
    try:
        yield sink
    finally:
        sink.stop()


def test_idn_addresses_with_names_are_delivered_in_ascii_without_smtputf8(
    envoy, mail_client, real_store, start_worker, plain_relay
):
    start_worker(MAILROOM_SMTP__PORT=str(plain_relay.port))
    rest_body = {
        **BASE,
        "to": ["Bob <bob@xn--bcher-kva.example>", "Ann Müller <ann@Bücher.example>"],
        "cc": ["user@xn--bcher-kva.example"],
        "bcc": ["Hidden <h@пример.рф>"],
        "from": "Shop <shop@bücher.example>",
        "reply_to": "Desk <desk@xn--bcher-kva.example>",
        "title": f"idn-{uuid.uuid4().hex}",
    }
    status, _, body = envoy.request("POST", "/api/email", rest_body)
    assert status == 201, body
    rest_id = body["id"]
    grpc_id = mail_client.SendEmail(
        mail_pb2.SendEmailRequest(
            to=["Bob <bob@bücher.example>"],
            from_address="Shop <shop@xn--bcher-kva.example>",
            title="idn grpc",
            content="x",
        ),
        timeout=10,
    ).id

    def sent(email_id: str) -> bool:
        email = Email.objects(id=email_id).first()
        return email is not None and email.status == Status.SENT

    wait_until(lambda: sent(rest_id) and sent(grpc_id), timeout=30, message="both are SENT")
    by_id = {m.message["X-Mailroom-Id"]: m for m in plain_relay.messages}
    rest, grpc_message = by_id[rest_id], by_id[grpc_id]
    assert sorted(rest.rcpt_tos) == sorted(
        [
            "bob@xn--bcher-kva.example",
            "ann@xn--bcher-kva.example",
            "user@xn--bcher-kva.example",
            "h@xn--e1afmkfd.xn--p1ai",
        ]
    )
    assert rest.mail_from == "shop@xn--bcher-kva.example"
    assert rest.raw.split(b"\r\n\r\n")[0].isascii()
    headers = rest.message
    assert [a.addr_spec for a in headers["To"].addresses] == [
        "bob@xn--bcher-kva.example",
        "ann@xn--bcher-kva.example",
    ]
    assert [a.display_name for a in headers["To"].addresses] == ["Bob", "Ann Müller"]
    assert headers["From"].addresses[0].display_name == "Shop"
    assert headers["Reply-To"].addresses[0].addr_spec == "desk@xn--bcher-kva.example"
    assert grpc_message.rcpt_tos == ["bob@xn--bcher-kva.example"]


def test_a_malformed_protobuf_is_invalid_argument(api):
    with grpc.insecure_channel(api.target) as channel:
        send = channel.unary_unary(
            "/mailroom.v1.MailService/SendEmail",
            request_serializer=lambda raw: raw,
            response_deserializer=mail_pb2.SendEmailResponse.FromString,
        )
        for raw in (b"\x0a\xff\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\xff"):
            with pytest.raises(grpc.RpcError) as info:
                send(raw, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raw
            no_leak(info.value.details())


def test_the_sender_policy_answers_403_naming_from(private_front, real_store):
    front = private_front(MAILROOM_ALLOWED_FROM_DOMAINS='["shop.example", "bücher.example"]')
    api, envoy_there = front.api, front.envoy
    before = count()
    status, _, body = envoy_there.request(
        "POST", "/api/email", {**BASE, "from": "CEO <ceo@bank.example>"}
    )
    assert status == 403, body
    assert body["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert body["message"].startswith("from:")
    no_leak(body)
    with grpc.insecure_channel(api.target) as channel:
        client = mail_pb2_grpc.MailServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            client.SendEmail(
                mail_pb2.SendEmailRequest(**BASE, from_address="ceo@bank.example"), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details().startswith("from:")
        assert count() == before
        # Inside the list, in either form of an IDN domain; no from: the default sender.
        for sender in ("Shop <news@shop.example>", "a@xn--bcher-kva.example", "b@BÜCHER.example"):
            client.SendEmail(mail_pb2.SendEmailRequest(**BASE, from_address=sender), timeout=10)
        client.SendEmail(mail_pb2.SendEmailRequest(**BASE), timeout=10)
    status, _, body = envoy_there.request("POST", "/api/email", {**BASE, "from": "x@shop.example"})
    assert status == 201, body
    assert count() == before + 5


class Paused:
    """SIGSTOP a process while the block runs; SIGCONT it afterwards."""

    def __init__(self, process) -> None:
        self.pid = process.pid

    def __enter__(self) -> Paused:
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


@pytest.mark.skipif(
    "MAILROOM_TEST_MONGODB_URI" in os.environ, reason="the external MongoDB cannot be paused"
)
def test_error_bodies_carry_no_internal_addresses_or_traces(
    private_front, mongo_server, real_store
):
    # A private API: the one of the session must not be left voiding this test's emails.
    front = private_front()
    envoy = front.envoy
    channel = grpc.insecure_channel(front.api.target)
    mail_client = mail_pb2_grpc.MailServiceStub(channel)
    bodies: list[object] = []
    # Bad input, unknown and malformed ids, unknown routes.
    for method, path, body in [
        ("POST", "/api/email", {"to": ["nope"], "title": "", "content": ""}),
        ("POST", "/api/email", {"to": "not-a-list"}),
        ("GET", f"/api/email/{'0' * 24}", None),
        ("GET", "/api/email/not-an-id", None),
        ("POST", f"/api/email/{'0' * 24}:cancel", None),
        ("GET", "/api/nothing-here", None),
    ]:
        status, _, answer = envoy.request(method, path, body)
        assert 400 <= status < 500, (path, answer)
        bodies.append(answer)
    # The store stalled (503) and down (500 or 503), over REST and gRPC.
    with Paused(mongo_server):
        status, _, answer = envoy.request("POST", "/api/email", BASE, timeout=30)
        assert status >= 500, answer
        bodies.append(answer)
        with pytest.raises(grpc.RpcError) as info:
            mail_client.SendEmail(mail_pb2.SendEmailRequest(**BASE), timeout=30)
        bodies.append(info.value.details())
        with pytest.raises(grpc.RpcError) as info:
            mail_client.GetEmail(mail_pb2.GetEmailRequest(id="0" * 24), timeout=30)
        bodies.append(info.value.details())
    mongo_server.stop()
    try:
        status, _, answer = envoy.request("POST", "/api/email", BASE, timeout=30)
        assert status >= 500, answer
        bodies.append(answer)
        with pytest.raises(grpc.RpcError) as info:
            mail_client.SendEmail(mail_pb2.SendEmailRequest(**BASE), timeout=30)
        bodies.append(info.value.details())
    finally:
        mongo_server.start()
        serving(envoy)
        channel.close()
    for body in bodies:
        no_leak(body)


# Wrong types, nulls, huge values, control characters, for every field of SendEmailRequest.
FIELDS = ["to", "cc", "bcc", "title", "content", "html", "from", "reply_to", "send_at",
          "idempotency_key"]  # fmt: skip
VALUES: list[object] = [
    None, 0, -1, 1.5e308, True, {}, {"a": 1}, [], [None], [1], [{}], [[]], "",
    "x" * 200_000, ["x" * 5_000], ["a@example.com"] * 60, "\x00", "\u2028", "a\x1bb",
    "\ud7ff\ue000", ["a\x00@example.com"], "2026-13-45T99:99:99Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z", "-1",
]  # fmt: skip


def test_rest_fuzz_never_answers_5xx_and_stores_nothing_refused(envoy, real_store):
    serving(envoy)
    # Every email of this test carries its own metadata pair: counting those is one indexed
    # equality on FerretDB, where counting the whole collection decodes every stored email.
    run = uuid.uuid4().hex
    base = {**BASE, "metadata": {"fuzz": run}}

    def count() -> int:
        return Email.objects(metadata_pairs=f"fuzz={run}").count()

    answers: dict[int, int] = {}
    for field in FIELDS:
        for value in VALUES:
            body = {**base, field: value}
            before = count()
            status, _, answer = envoy.request("POST", "/api/email", body, timeout=30)
            answers[status] = answers.get(status, 0) + 1
            assert status < 500, (field, value if len(repr(value)) < 200 else "...", answer)
            if status == 201:
                assert count() == before + 1
            else:
                assert count() == before, (field, answer)
                no_leak(answer)
    # Unknown fields, and a body that is not an object.
    for body in [
        {**base, "reply_too": "r@example.com"},
        {**base, "bcc_list": ["b@example.com"]},
        [base],
        "text",
        None,
    ]:
        before = count()
        status, _, answer = envoy.request("POST", "/api/email", body)
        assert status < 500, (body, answer)
        assert count() == before + (1 if status == 201 else 0)
    assert answers.get(400, 0) > 0
