"""server/provider_events: each provider's proof of origin, parsing, duplicates, unknown types."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

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
    mailgun_opened,
    postmark_auth,
    postmark_bounce,
    postmark_delivery,
    sendgrid_events,
    ses_bounce,
    ses_complaint,
    sns_confirmation,
    sns_notification,
)

from core.errors import InvalidArgument, NotFound, Unauthenticated
from core.provider_event_counts import SharedCounts
from core.settings import Settings
from core.store.documents import Email, Status
from core.store.events import StoredProviderEvent
from core.store.repository import NewEmail, new_email_document
from core.store.suppressions import suppressed_among
from server.provider_events import metrics, ses
from server.provider_events.servicer import ProviderEventServicer


def _headers(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


def _email(provider_message_id: str, to: str = "ann@example.com") -> Email:
    new = NewEmail(to=[to], subject="hi", text="hello", from_address="me@example.com")
    oid = ObjectId()
    doc = new_email_document(
        new, message_id_domain="mailroom.test", email_id=oid, now=datetime.now()
    )
    doc["status"] = Status.SENT.value
    doc["provider_message_id"] = provider_message_id
    Email._get_collection().insert_one(doc)
    return Email.objects.get(id=oid)


@pytest.fixture(autouse=True)
def _cluster_counts_in_memory(monkeypatch: pytest.MonkeyPatch, fake_redis: Any) -> None:
    """The servicers' cluster-wide counts go to an in-memory hash, not a local Redis."""
    monkeypatch.setattr(
        SharedCounts, "from_url", classmethod(lambda cls, *_a, **_k: cls(fake_redis))
    )


def _servicer(**events: Any) -> ProviderEventServicer:
    return ProviderEventServicer(Settings(_env_file=None, provider_events=events))


def _count(provider: str, kind: str, outcome: str) -> float:
    return metrics.EVENTS_RECEIVED.labels(provider, kind, outcome)._value.get()


def _failures(provider: str) -> float:
    return metrics.SIGNATURE_FAILURES.labels(provider)._value.get()


# --- SendGrid ---


def test_sendgrid_signed_batch_is_stored_once_and_unknown_types_kept(fake_store) -> None:
    signer = SendGridSigner.new()
    servicer = _servicer(sendgrid_public_key=signer.public_key)
    email = _email("14c5d75ce93.dfd.64b469")
    body = json.dumps(sendgrid_events("14c5d75ce93.dfd.64b469", "ann@example.com")).encode()
    unknown_before = _count("sendgrid", "UNKNOWN", "stored")
    # processed is ignored; delivered, bounce and the unknown type are stored.
    assert servicer.receive("sendgrid", body, _headers(signer.headers(body))) == 3
    assert _count("sendgrid", "UNKNOWN", "stored") == unknown_before + 1
    email.reload()
    assert email.status == Status.BOUNCED
    assert {(e.type, e.bounce_type, e.diagnostic_code) for e in email.events} == {
        ("DELIVERED", "", ""),
        ("BOUNCED", "hard", "5.0.0"),
    }
    assert suppressed_among(["ann@example.com"]) == {"ann@example.com": "hard_bounce"}
    # SendGrid retries the same batch: nothing new.
    assert servicer.receive("sendgrid", body, _headers(signer.headers(body))) == 0
    assert StoredProviderEvent.objects.count() == 3


@pytest.mark.parametrize("tamper", ["body", "timestamp", "key", "missing"])
def test_sendgrid_bad_signature_is_401_and_records_nothing(fake_store, tamper) -> None:
    signer = SendGridSigner.new()
    other = SendGridSigner.new()
    servicer = _servicer(sendgrid_public_key=(other if tamper == "key" else signer).public_key)
    body = json.dumps(sendgrid_events("x", "ann@example.com")).encode()
    headers = _headers(signer.headers(body, timestamp="1600000000"))
    if tamper == "body":
        body = body.replace(b"ann@", b"eve@")
    elif tamper == "timestamp":
        headers["x-twilio-email-event-webhook-timestamp"] = "1600000001"
    elif tamper == "missing":
        headers = {}
    before = _failures("sendgrid")
    with pytest.raises(Unauthenticated):
        servicer.receive("sendgrid", body, headers)
    assert _failures("sendgrid") == before + 1
    assert StoredProviderEvent.objects.count() == 0


def test_an_unconfigured_provider_is_refused(fake_store) -> None:
    with pytest.raises(Unauthenticated, match="not configured"):
        _servicer().receive("sendgrid", b"[]", {})


def test_an_unknown_provider_is_not_found(fake_store) -> None:
    with pytest.raises(NotFound):
        _servicer().receive("sparkpost", b"[]", {})


def test_a_signed_body_that_is_not_json_is_a_400_naming_body(fake_store) -> None:
    signer = SendGridSigner.new()
    servicer = _servicer(sendgrid_public_key=signer.public_key)
    with pytest.raises(InvalidArgument) as caught:
        servicer.receive("sendgrid", b"nope", _headers(signer.headers(b"nope")))
    assert caught.value.violations[0].field == "body"


# --- Mailgun ---


def test_mailgun_signed_events_match_our_message_id_and_dedupe(fake_store) -> None:
    email = _email("<20261202.1@mailroom.test>")
    servicer = _servicer(mailgun_signing_key=MAILGUN_KEY)
    opened = mailgun_body(mailgun_opened("20261202.1@mailroom.test", "ann@example.com"))
    failed = mailgun_body(mailgun_failed("20261202.1@mailroom.test", "ann@example.com"))
    assert servicer.receive("mailgun", opened, {}) == 1
    assert servicer.receive("mailgun", opened, {}) == 0
    assert servicer.receive("mailgun", failed, {}) == 1
    email.reload()
    assert email.status == Status.BOUNCED
    bounced = [e for e in email.events if e.type == "BOUNCED"]
    assert [(e.bounce_type, e.diagnostic_code) for e in bounced] == [("hard", "5.1.1")]
    unknown = mailgun_body({**mailgun_opened("m", "a@example.com", event_id="z"), "event": "new"})
    assert servicer.receive("mailgun", unknown, {}) == 1
    assert StoredProviderEvent.objects.get(key="mailgun:z").type == "UNKNOWN"


@pytest.mark.parametrize("how", ["wrong key", "no signature", "altered"])
def test_mailgun_bad_signature_is_refused(fake_store, how) -> None:
    servicer = _servicer(mailgun_signing_key=MAILGUN_KEY)
    event = mailgun_opened("m@x", "ann@example.com")
    body = mailgun_body(event, key="another-key" if how == "wrong key" else MAILGUN_KEY)
    if how == "no signature":
        body = json.dumps({"event-data": event}).encode()
    elif how == "altered":
        document = json.loads(body)
        document["signature"]["token"] = "b" * 50
        body = json.dumps(document).encode()
    with pytest.raises(Unauthenticated):
        servicer.receive("mailgun", body, {})
    assert StoredProviderEvent.objects.count() == 0


# --- Postmark ---


def test_postmark_basic_auth_records_and_bounce_ids_dedupe(fake_store) -> None:
    email = _email("883953f4-6105-42a2-a16a-77a8eac79483")
    servicer = _servicer(postmark_username=POSTMARK_USER, postmark_password=POSTMARK_PASSWORD)
    auth = _headers(postmark_auth())
    delivery = json.dumps(postmark_delivery(email.provider_message_id, "ann@example.com"))
    bounce = json.dumps(postmark_bounce(email.provider_message_id, "ann@example.com"))
    assert servicer.receive("postmark", delivery.encode(), auth) == 1
    assert servicer.receive("postmark", delivery.encode(), auth) == 0  # hashed: a duplicate
    assert servicer.receive("postmark", bounce.encode(), auth) == 1
    assert servicer.receive("postmark", bounce.encode(), auth) == 0
    email.reload()
    assert email.status == Status.BOUNCED
    assert email.recipient_statuses[0].diagnostic_code.startswith("smtp;550 5.1.1")
    unknown = json.dumps({"RecordType": "Inbound", "MessageID": "x"}).encode()
    assert servicer.receive("postmark", unknown, auth) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        postmark_auth(password="wrong"),
        postmark_auth(user="other"),
        {"Authorization": "Basic !!"},
    ],
)
def test_postmark_wrong_credentials_are_refused(fake_store, headers) -> None:
    servicer = _servicer(postmark_username=POSTMARK_USER, postmark_password=POSTMARK_PASSWORD)
    body = json.dumps(postmark_delivery("m", "ann@example.com")).encode()
    with pytest.raises(Unauthenticated):
        servicer.receive("postmark", body, _headers(headers))
    assert StoredProviderEvent.objects.count() == 0


# --- Amazon SES through SNS ---


@pytest.fixture
def sns(monkeypatch) -> SnsSigner:
    """A local signing certificate, served to the verifier in place of an HTTP fetch."""
    signer = SnsSigner.new()
    fetched: list[str] = []

    class Response:
        def __init__(self, url: str) -> None:
            self.content = signer.cert_pem
            fetched.append(url)

        def raise_for_status(self) -> None:
            return None

    monkeypatch.setattr(ses.httpx, "get", lambda url, **_: Response(url))
    signer.fetched = fetched  # type: ignore[attr-defined]
    return signer


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_signed_notifications_are_stored_once(fake_store, sns, version) -> None:
    email = _email("0000014a-f4d4-4f89-93ea-a1d1b1a3f9f4-000000")
    servicer = _servicer()
    bounce = sns.sign(
        sns_notification(ses_bounce(email.provider_message_id, "ann@example.com"), message_id="n1"),
        version,
    )
    body = json.dumps(bounce).encode()
    assert servicer.receive("ses", body, {}) == 1
    assert servicer.receive("ses", body, {}) == 0
    complaint = sns.sign(
        sns_notification(
            ses_complaint("other-id", "ann@example.com", email.message_id), message_id="n2"
        ),
        version,
    )
    assert servicer.receive("ses", json.dumps(complaint).encode(), {}) == 1
    email.reload()
    assert email.status == Status.COMPLAINED
    assert [e.type for e in email.events] == ["BOUNCED", "COMPLAINED"]


def test_ses_bad_signature_or_untrusted_cert_is_refused(fake_store, sns) -> None:
    servicer = _servicer()
    signed = sns.sign(sns_notification(ses_bounce("m", "ann@example.com"), message_id="n1"))
    altered = {**signed, "Message": signed["Message"].replace("ann@", "eve@")}
    elsewhere = {**signed, "SigningCertURL": "https://evil.example.com/sns.pem"}
    plain_http = {**signed, "SigningCertURL": signed["SigningCertURL"].replace("https", "http")}
    lookalike = {
        **signed,
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
    }
    for message in (altered, elsewhere, plain_http, lookalike, {**signed, "SignatureVersion": "3"}):
        with pytest.raises(Unauthenticated):
            servicer.receive("ses", json.dumps(message).encode(), {})
    assert StoredProviderEvent.objects.count() == 0


def test_ses_subscription_confirmation_fetches_the_subscribe_url(fake_store, sns) -> None:
    servicer = _servicer()
    url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    message = sns.sign(sns_confirmation(url))
    assert servicer.receive("ses", json.dumps(message).encode(), {}) == 0
    assert sns.fetched[-1] == url
    elsewhere = sns.sign(sns_confirmation("https://evil.example.com/confirm"))
    with pytest.raises(Unauthenticated):
        servicer.receive("ses", json.dumps(elsewhere).encode(), {})


def test_ses_topics_can_be_limited(fake_store, sns) -> None:
    servicer = _servicer(ses_topic_arns=["arn:aws:sns:us-east-1:1:other"])
    signed = sns.sign(sns_notification(ses_bounce("m", "ann@example.com"), message_id="n1"))
    with pytest.raises(Unauthenticated, match="topic"):
        servicer.receive("ses", json.dumps(signed).encode(), {})


def test_a_trusted_prefix_admits_a_local_certificate_url() -> None:
    verifier = ses.SnsVerifier(["http://127.0.0.1:8000/"], 1.0)
    assert verifier.trusted("http://127.0.0.1:8000/cert.pem", certificate=True)
    assert not verifier.trusted("http://127.0.0.1:9000/cert.pem", certificate=True)
    assert verifier.trusted("https://sns.eu-west-1.amazonaws.com/x.pem", certificate=True)
    assert not verifier.trusted("https://sns.eu-west-1.amazonaws.com/x.txt", certificate=True)
