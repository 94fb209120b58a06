"""Provider events end to end: each provider's real payload shape, signed with local keys, posted
through Envoy to an API configured with the matching keys; GetEmail shows the outcome.

The SNS signing certificate and the SubscribeURL are served by a local HTTP server, which the
API trusts through MAILROOM_PROVIDER_EVENTS__SNS_TRUSTED_URL_PREFIXES.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from bson import ObjectId
from provider_samples import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SendGridSigner,
    SnsSigner,
    mailgun_body,
    mailgun_failed,
    postmark_auth,
    postmark_bounce,
    postmark_delivery,
    sendgrid_events,
    ses_complaint,
    ses_delivery,
    sns_confirmation,
    sns_notification,
)
from pytest_httpserver import HTTPServer

from core.store.documents import Email, Status
from core.store.events import StoredProviderEvent
from core.store.repository import NewEmail, new_email_document
from devtools.envoy_config import write_envoy_config
from devtools.services import start_envoy
from helpers import free_port, wait_until
from mailroom_processes import ApiProcess

pytestmark = pytest.mark.usefixtures("real_store")

BIN = Path(sys.executable).parent


@dataclass
class Stack:
    """An API configured for provider events, Envoy in front of it, and the keys it trusts."""

    url: str
    metrics_url: str
    env: dict[str, str]
    sendgrid: SendGridSigner
    sns: SnsSigner
    sns_server: HTTPServer

    def post(
        self, provider: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, object]:
        req = urllib.request.Request(
            f"{self.url}/api/providers/{provider}/events", data=body, method="POST"
        )
        # SNS posts JSON as text/plain; the others as application/json.
        kind = "text/plain; charset=UTF-8" if provider == "ses" else "application/json"
        req.add_header("content-type", kind)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def send_refused(self, recipient: str, content: str) -> dict:
        """POST /api/email to ``recipient``, which must answer 400; its JSON body."""
        req = urllib.request.Request(
            f"{self.url}/api/email",
            data=json.dumps({"to": [recipient], "title": "hi", "content": content}).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=15)
        assert refused.value.code == 400
        return json.loads(refused.value.read())

    def get_email(self, email_id: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/email/{email_id}", timeout=15) as resp:
            return json.loads(resp.read())["email"]

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=15) as resp:
            return resp.read().decode()


@pytest.fixture(scope="module")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sendgrid, sns = SendGridSigner.new(), SnsSigner.new()
    sns_server = HTTPServer(host="127.0.0.1", port=free_port())
    sns_server.start()
    base = f"http://127.0.0.1:{sns_server.port}/"
    sns.cert_url = f"{base}SimpleNotificationService-local.pem"
    sns_server.expect_request("/SimpleNotificationService-local.pem").respond_with_data(
        sns.cert_pem, content_type="application/x-pem-file"
    )
    metrics_port = free_port()
    env = {
        **service_env,
        "MAILROOM_PROVIDER_EVENTS__SENDGRID_PUBLIC_KEY": sendgrid.public_key,
        "MAILROOM_PROVIDER_EVENTS__MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "MAILROOM_PROVIDER_EVENTS__POSTMARK_USERNAME": POSTMARK_USER,
        "MAILROOM_PROVIDER_EVENTS__POSTMARK_PASSWORD": POSTMARK_PASSWORD,
        "MAILROOM_PROVIDER_EVENTS__SNS_TRUSTED_URL_PREFIXES": json.dumps([base]),
        "MAILROOM_API_METRICS_PORT": str(metrics_port),
    }
    directory = tmp_path_factory.mktemp("provider-events")
    api = ApiProcess(env, directory / "api.log").start()
    port, admin_port = free_port(), free_port()
    config = write_envoy_config(
        directory / "envoy.yaml", listen_port=port, admin_port=admin_port, api_port=api.port
    )
    envoy = start_envoy(config, admin_port)
    try:
        yield Stack(
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
            env,
            sendgrid,
            sns,
            sns_server,
        )
    finally:
        envoy.stop()
        api.stop()
        sns_server.stop()


def sent_email(provider_message_id: str, *to: str) -> Email:
    """A SENT email, as a worker leaves it, with the provider's id for it."""
    new = NewEmail(to=list(to), subject="hi", text="hello", from_address="me@example.com")
    oid = ObjectId()
    now = datetime.utcnow().replace(microsecond=0)
    doc = new_email_document(new, message_id_domain="mailroom.test", email_id=oid, now=now)
    doc.update(status=Status.SENT.value, provider_message_id=provider_message_id, sent_at=now)
    Email._get_collection().insert_one(doc)
    return Email.objects.get(id=oid)


def stored(*keys: str) -> list[StoredProviderEvent]:
    return list(StoredProviderEvent.objects(key__in=list(keys)))


def test_sendgrid_signed_batch_bad_signature_and_retry(stack: Stack) -> None:
    x_message_id = f"sg{ObjectId()}"
    email = sent_email(x_message_id, "ann@example.com")
    prefix = f"sg-{email.id}"
    body = json.dumps(sendgrid_events(x_message_id, "ann@example.com", prefix=prefix)).encode()

    forged = stack.sendgrid.headers(body.replace(b"ann@", b"eve@"))
    status, answer = stack.post("sendgrid", body, forged)
    assert status == 401, answer
    kinds = ("processed", "delivered", "bounce", "future")
    assert stored(*(f"sendgrid:{prefix}-{kind}" for kind in kinds)) == []

    status, answer = stack.post("sendgrid", body, stack.sendgrid.headers(body))
    assert (status, answer) == (200, {"stored": 3})  # delivered, bounce, an unknown type
    status, answer = stack.post("sendgrid", body, stack.sendgrid.headers(body))
    assert (status, answer) == (200, {"stored": 0})  # SendGrid's retry: recorded once

    shown = stack.get_email(str(email.id))
    assert shown["status"] == "EMAIL_STATUS_BOUNCED"
    assert {(e["type"], e["bounceType"], e["diagnosticCode"]) for e in shown["events"]} == {
        ("EMAIL_EVENT_TYPE_DELIVERED", "", ""),
        ("EMAIL_EVENT_TYPE_BOUNCED", "hard", "5.0.0"),
    }
    assert shown["recipientStatuses"][0]["status"] == "RECIPIENT_STATUS_BOUNCED"
    unknown = StoredProviderEvent.objects.get(key=f"sendgrid:{prefix}-future")
    assert unknown.type == "UNKNOWN" and "group_resubscribe_v2" in unknown.raw


def test_mailgun_signature_in_the_body(stack: Stack) -> None:
    message_id = f"{ObjectId()}@mailroom.test"
    email = sent_email(f"<{message_id}>", "bob@example.com")
    event = mailgun_failed(message_id, "bob@example.com", event_id=f"mg-{email.id}")
    status, _ = stack.post("mailgun", mailgun_body(event, key="not-the-key"))
    assert status == 401 and stored(f"mailgun:mg-{email.id}") == []
    body = mailgun_body(event)
    assert stack.post("mailgun", body) == (200, {"stored": 1})
    assert stack.post("mailgun", body) == (200, {"stored": 0})
    shown = stack.get_email(str(email.id))
    assert shown["status"] == "EMAIL_STATUS_BOUNCED"
    assert shown["events"][0]["diagnosticCode"] == "5.1.1"


def test_postmark_basic_auth(stack: Stack) -> None:
    message_id = str(ObjectId())
    email = sent_email(message_id, "cy@example.com")
    delivery = json.dumps(postmark_delivery(message_id, "cy@example.com")).encode()
    status, _ = stack.post("postmark", delivery, postmark_auth(password="wrong"))
    assert status == 401
    status, _ = stack.post("postmark", delivery)
    assert status == 401
    assert StoredProviderEvent.objects(provider="postmark", email_id=str(email.id)).count() == 0
    assert stack.post("postmark", delivery, postmark_auth()) == (200, {"stored": 1})
    assert stack.post("postmark", delivery, postmark_auth()) == (200, {"stored": 0})
    assert stack.get_email(str(email.id))["status"] == "EMAIL_STATUS_DELIVERED"


def test_ses_through_sns_confirmation_and_signed_notifications(stack: Stack) -> None:
    confirm_path = f"/confirm-{ObjectId()}"
    stack.sns_server.expect_request(confirm_path).respond_with_data(
        "<ConfirmSubscriptionResponse/>"
    )
    confirmation = stack.sns.sign(
        sns_confirmation(f"{stack.sns.cert_url.rsplit('/', 1)[0]}{confirm_path}")
    )
    assert stack.post("ses", json.dumps(confirmation).encode()) == (200, {"stored": 0})
    assert any(req.path == confirm_path for req, _ in stack.sns_server.log)

    ses_id = f"0100{ObjectId()}-000000"
    email = sent_email(ses_id, "dee@example.com")
    delivery = stack.sns.sign(
        sns_notification(ses_delivery(ses_id, "dee@example.com"), message_id=f"d-{email.id}"), "2"
    )
    forged = {**delivery, "Message": delivery["Message"].replace("dee@", "eve@")}
    status, _ = stack.post("ses", json.dumps(forged).encode())
    assert status == 401
    assert stack.post("ses", json.dumps(delivery).encode()) == (200, {"stored": 1})
    assert stack.post("ses", json.dumps(delivery).encode()) == (200, {"stored": 0})
    # The complaint names the email by our Message-ID only (as SES echoes it in mail.headers).
    complaint = stack.sns.sign(
        sns_notification(
            ses_complaint("another-ses-id", "dee@example.com", email.message_id),
            message_id=f"c-{email.id}",
        ),
        "1",
    )
    assert stack.post("ses", json.dumps(complaint).encode()) == (200, {"stored": 1})
    shown = stack.get_email(str(email.id))
    assert shown["status"] == "EMAIL_STATUS_COMPLAINED"
    assert [e["type"] for e in shown["events"]] == [
        "EMAIL_EVENT_TYPE_DELIVERED",
        "EMAIL_EVENT_TYPE_COMPLAINED",
    ]
    # ListEmails shows them too, and filters on the new status.
    query = "status=EMAIL_STATUS_COMPLAINED&recipient=dee@example.com&pageSize=500"
    with urllib.request.urlopen(f"{stack.url}/api/emails?{query}", timeout=15) as resp:
        listed = {e["id"]: e for e in json.loads(resp.read())["emails"]}
    assert len(listed[str(email.id)]["events"]) == 2
    assert listed[str(email.id)]["recipientStatuses"] == [
        {
            "address": "dee@example.com",
            "status": "RECIPIENT_STATUS_COMPLAINED",
            "updateTime": "2016-01-27T14:59:38.237Z",
            "diagnosticCode": "",
        }
    ]


def test_metrics_count_events_and_signature_failures(stack: Stack) -> None:
    body = json.dumps(postmark_delivery("no-such-message", "x@example.com")).encode()
    stack.post("postmark", body, postmark_auth(user="intruder"))
    stack.post("postmark", body, postmark_auth())
    text = stack.metrics()
    assert 'mailroom_provider_event_signature_failures_total{provider="postmark"}' in text
    assert (
        'mailroom_provider_events_received_total{outcome="stored",provider="postmark",'
        'type="DELIVERED"}' in text
    )
    assert 'mailroom_provider_events_unmatched_total{provider="postmark"}' in text


def test_the_workers_endpoint_shows_the_counts_cluster_wide(stack: Stack, start_worker) -> None:
    metrics_port = free_port()
    start_worker(MAILROOM_METRICS_PORT=str(metrics_port))  # starts on an empty Redis
    body = json.dumps(postmark_delivery(str(ObjectId()), "x@example.com")).encode()
    assert stack.post("postmark", body, postmark_auth(user="intruder"))[0] == 401
    assert stack.post("postmark", body, postmark_auth()) == (200, {"stored": 1})

    def scrape() -> str:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.read().decode()

    expected = [
        'mailroom_provider_event_signature_failures_total{provider="postmark"} 1.0',
        'mailroom_provider_events_received_total{outcome="stored",provider="postmark",'
        'type="DELIVERED"} 1.0',
        'mailroom_provider_events_unmatched_total{provider="postmark"} 1.0',
    ]
    wait_until(
        lambda: (text := scrape()) and all(line in text for line in expected),
        timeout=60,
        message="provider event counts on the worker's endpoint",
        ignore=(OSError,),
    )


def test_a_hard_bounce_suppresses_the_next_send(stack: Stack, start_worker) -> None:
    start_worker()
    recipient = f"gone-{ObjectId()}@example.net"
    req = urllib.request.Request(
        f"{stack.url}/api/email",
        data=json.dumps({"to": [recipient], "title": "hi", "content": "one"}).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        email_id = json.loads(resp.read())["id"]
    deadline = time.monotonic() + 60
    while stack.get_email(email_id)["status"] != "EMAIL_STATUS_SENT":
        assert time.monotonic() < deadline, "the email was not sent"
        time.sleep(0.2)
    email = Email.objects.get(id=email_id)

    # The SMTP relay's bounce arrives as a DSN; the admin CLI ingests it.
    from provider_samples import dsn

    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"dsn-{email_id}.eml"
    report.write_bytes(dsn(email.message_id, recipient))
    done = subprocess.run(
        [str(BIN / "mailroom-admin"), "events", "ingest-dsn", str(report)],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    report.unlink()
    assert done.returncode == 0, done.stderr
    assert f"BOUNCED (hard) 5.1.1 -> {email_id}" in done.stdout
    assert stack.get_email(email_id)["status"] == "EMAIL_STATUS_BOUNCED"

    # The sends to that address are refused (no recipient remains) once the API process has
    # read the list's change notes: the CLI is another process (about a second).
    def refused() -> dict | None:
        try:
            return stack.send_refused(recipient, "two")
        except pytest.fail.Exception:  # accepted: not read yet (pytest.raises saw no error)
            return None

    answer = wait_until(refused, timeout=30, interval=0.2, message="the API refuses the address")
    assert "hard_bounce" in json.dumps(answer)


def test_a_postmark_hard_bounce_suppresses_too(stack: Stack) -> None:
    message_id = str(ObjectId())
    recipient = f"pm-{message_id}@example.net"
    email = sent_email(message_id, recipient)
    bounce = json.dumps(postmark_bounce(message_id, recipient, bounce_id=int(time.time()))).encode()
    assert stack.post("postmark", bounce, postmark_auth()) == (200, {"stored": 1})
    assert stack.get_email(str(email.id))["status"] == "EMAIL_STATUS_BOUNCED"
    stack.send_refused(recipient, "x")


def test_a_provider_event_reaches_webhook_subscribers_signed(stack: Stack, start_worker) -> None:
    from mailroom import verify_webhook

    receiver = HTTPServer(host="127.0.0.1", port=free_port())
    receiver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    receiver.start()
    start_worker(
        MAILROOM_WEBHOOKS__MIN_BACKOFF_MS="200",
        MAILROOM_WEBHOOKS__MAX_BACKOFF_MS="1500",
    )
    req = urllib.request.Request(
        f"{stack.url}/api/webhooks",
        data=json.dumps(
            {"url": f"http://127.0.0.1:{receiver.port}/hook", "eventTypes": ["email.bounced"]}
        ).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        created = json.loads(resp.read())
    try:
        message_id = str(ObjectId())
        recipient = f"hooked-{message_id}@example.net"
        email = sent_email(message_id, recipient)
        bounce = postmark_bounce(message_id, recipient, bounce_id=int(time.time() * 1000))
        body = json.dumps(bounce).encode()
        assert stack.post("postmark", body, postmark_auth()) == (200, {"stored": 1})
        assert stack.post("postmark", body, postmark_auth()) == (200, {"stored": 0})
        deadline = time.monotonic() + 60
        while not receiver.log:
            assert time.monotonic() < deadline, "the webhook was not delivered"
            time.sleep(0.2)
        request, _ = receiver.log[0]
        event = verify_webhook(request.get_data(), dict(request.headers), created["secret"])
        assert event["type"] == "email.bounced"
        assert event["data"]["email_id"] == str(email.id)
        assert event["data"]["provider"] == "postmark"
        assert event["data"]["bounce_type"] == "hard"
        assert event["data"]["recipient"] == recipient
    finally:
        delete = urllib.request.Request(
            f"{stack.url}/api/webhooks/{created['webhook']['id']}", method="DELETE"
        )
        urllib.request.urlopen(delete, timeout=15).close()
        receiver.stop()
    # The retried request published nothing more.
    assert len(receiver.log) == 1
