"""WebhookService: validation naming the field, the secret shown once, delete, replay."""

from __future__ import annotations

from unittest import mock

import pytest

from core import events_out
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from core.store.documents import utcnow
from mailroom.v1 import webhooks_pb2
from server.webhooks import WebhookServicer, url_problem


@pytest.fixture
def servicer(fake_store, settings, monkeypatch):
    queue = mock.Mock()
    monkeypatch.setattr(events_out, "_queue", queue)
    return WebhookServicer(settings, mock.Mock())


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://x.example/",
        "https://",
        "https://a b.example/",
        "https://u:p@x.example/",
        "https://x.example:99999/",
        "x.example/hook",
        "https://x.example/#frag",
    ],
)
def test_bad_urls_are_named(url) -> None:
    assert url_problem(url)


def test_good_urls() -> None:
    assert url_problem("https://hooks.example.com/mail?x=1") is None
    assert url_problem("http://127.0.0.1:8000/hook") is None


def test_create_validates_each_field(servicer) -> None:
    request = webhooks_pb2.CreateWebhookRequest(
        url="ftp://x", event_types=["email.sent", "email.exploded"], description="d" * 201
    )
    with pytest.raises(InvalidArgument) as err:
        servicer.CreateWebhook(request, mock.Mock())
    assert [v.field for v in err.value.violations] == ["url", "event_types[1]", "description"]


def test_create_list_delete(servicer) -> None:
    context = mock.Mock()
    created = servicer.CreateWebhook(
        webhooks_pb2.CreateWebhookRequest(
            url="https://x.example/hook", event_types=["email.sent", "email.sent"]
        ),
        context,
    )
    context.send_initial_metadata.assert_called_once_with((("x-http-status", "201"),))
    assert created.secret.startswith("whsec_")
    assert list(created.webhook.event_types) == ["email.sent"]
    listed = servicer.ListWebhooks(webhooks_pb2.ListWebhooksRequest(), mock.Mock())
    assert [w.id for w in listed.webhooks] == [created.webhook.id]
    assert "secret" not in str(listed)
    servicer.DeleteWebhook(webhooks_pb2.DeleteWebhookRequest(id=created.webhook.id), mock.Mock())
    with pytest.raises(NotFound):
        servicer.DeleteWebhook(
            webhooks_pb2.DeleteWebhookRequest(id=created.webhook.id), mock.Mock()
        )


def test_deliveries_page_and_replay(servicer) -> None:
    store.create_subscription("https://x.example/hook")
    for n in range(3):
        events_out.publish(f"e{n}", "email.sent", {}, occurred_at=utcnow())
    page = servicer.ListWebhookDeliveries(
        webhooks_pb2.ListWebhookDeliveriesRequest(page_size=2), mock.Mock()
    )
    assert [d.email_id for d in page.deliveries] == ["e2", "e1"]
    rest = servicer.ListWebhookDeliveries(
        webhooks_pb2.ListWebhookDeliveriesRequest(page_token=page.next_page_token), mock.Mock()
    )
    assert [d.email_id for d in rest.deliveries] == ["e0"] and not rest.next_page_token
    with pytest.raises(InvalidArgument):
        servicer.ListWebhookDeliveries(
            webhooks_pb2.ListWebhookDeliveriesRequest(page_token="x"), mock.Mock()
        )

    target = outbox.get_delivery(rest.deliveries[0].id)
    with pytest.raises(FailedPrecondition):
        servicer.ReplayWebhookDelivery(
            webhooks_pb2.ReplayWebhookDeliveryRequest(id=target.key), mock.Mock()
        )
    attempt = store.WebhookAttempt(at=utcnow(), status_code=500, error="HTTP 500")
    outbox.record_attempt(target, attempt, state=store.DeliveryState.DEAD, next_attempt_at=None)
    dead = servicer.ListWebhookDeliveries(
        webhooks_pb2.ListWebhookDeliveriesRequest(state=webhooks_pb2.WEBHOOK_DELIVERY_STATE_DEAD),
        mock.Mock(),
    )
    assert [d.id for d in dead.deliveries] == [target.key]
    assert dead.deliveries[0].attempts[0].status_code == 500
    replayed = servicer.ReplayWebhookDelivery(
        webhooks_pb2.ReplayWebhookDeliveryRequest(id=target.key), mock.Mock()
    )
    assert replayed.delivery.state == webhooks_pb2.WEBHOOK_DELIVERY_STATE_PENDING
    with pytest.raises(NotFound):
        servicer.ReplayWebhookDelivery(
            webhooks_pb2.ReplayWebhookDeliveryRequest(id="nope"), mock.Mock()
        )
