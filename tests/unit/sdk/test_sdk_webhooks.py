"""verify_webhook: the receiver's check of Mailroom's Standard Webhooks signatures."""

from __future__ import annotations

import pytest

from mailroom import WebhookVerificationError, sign_webhook, verify_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = (
    b'{"data":{"email_id":"e1"},"id":"evt_1",'
    b'"timestamp":"2026-12-02T12:00:00.000Z","type":"email.sent"}'
)
NOW = 1_764_676_800


def headers(body: bytes = BODY, secret: str = SECRET, ts: int = NOW) -> dict[str, str]:
    return {
        "Webhook-Id": "evt_1",
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": sign_webhook(secret, "evt_1", ts, body),
    }


def test_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    assert (
        sign_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_genuine_delivery_verifies() -> None:
    event = verify_webhook(BODY, headers(), SECRET, now=NOW + 10)
    assert event["type"] == "email.sent"
    assert event["data"]["email_id"] == "e1"


def test_any_of_several_signatures_may_match() -> None:
    h = headers()
    h["Webhook-Signature"] = "v1,bm90IGl0 " + h["Webhook-Signature"]
    assert verify_webhook(BODY.decode(), h, SECRET, now=NOW)["id"] == "evt_1"


@pytest.mark.parametrize(
    "change",
    [
        lambda h, b: (h, b.replace(b"e1", b"e2")),
        lambda h, b: ({**h, "Webhook-Id": "evt_2"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "Webhook-Signature"}, b),
        lambda h, b: ({**h, "Webhook-Timestamp": "soon"}, b),
        lambda h, b: (headers(secret="whsec_" + "QUFBQUFBQUFBQUFB"), b),
    ],
)
def test_tampered_or_incomplete_deliveries_are_refused(change) -> None:
    h, b = change(headers(), BODY)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(b, h, SECRET, now=NOW)


def test_an_old_timestamp_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify_webhook(BODY, headers(), SECRET, now=NOW + 301)


def test_delivery_messages_convert() -> None:
    from mailroom import WebhookDelivery, WebhookDeliveryState
    from mailroom.v1 import webhooks_pb2

    message = webhooks_pb2.WebhookDelivery(
        id="evt_1_w",
        webhook_id="w",
        event_id="evt_1",
        email_id="e1",
        event_type="email.sent",
        state=webhooks_pb2.WEBHOOK_DELIVERY_STATE_DEAD,
        payload="{}",
        attempts=[webhooks_pb2.WebhookAttempt(status_code=500, error="HTTP 500")],
    )
    message.create_time.FromSeconds(NOW)
    delivery = WebhookDelivery.from_proto(message)
    assert delivery.state is WebhookDeliveryState.DEAD
    assert delivery.attempts[0].status_code == 500 and delivery.attempts[0].at is None
    assert delivery.created_at is not None and delivery.next_attempt_at is None
