"""The API adds each request's provider event counts to the shared hash, best effort."""

import json
import logging

import pytest
from provider_samples import SendGridSigner, sendgrid_events

from core.errors import Unauthenticated
from core.provider_event_counts import SharedCounts
from core.settings import Settings
from server.provider_events import metrics
from server.provider_events.servicer import ProviderEventServicer


@pytest.fixture
def servicer(monkeypatch, fake_redis):
    monkeypatch.setattr(
        SharedCounts, "from_url", classmethod(lambda cls, *_a, **_k: cls(fake_redis))
    )
    signer = SendGridSigner.new()
    settings = Settings(_env_file=None, provider_events={"sendgrid_public_key": signer.public_key})
    return ProviderEventServicer(settings), signer


def signed(signer):
    body = json.dumps(sendgrid_events("no-such-message", "ann@example.com")).encode()
    return body, {k.lower(): v for k, v in signer.headers(body).items()}


def test_a_request_is_counted_in_one_round_trip(fake_store, fake_redis, servicer) -> None:
    service, signer = servicer
    body, headers = signed(signer)
    assert service.receive("sendgrid", body, headers) == 3
    assert fake_redis.round_trips == 1
    series = SharedCounts(fake_redis).read()
    assert series["received"][("sendgrid", "BOUNCED", "stored")] == 1
    assert series["unmatched"][("sendgrid",)] == 3
    with pytest.raises(Unauthenticated):
        service.receive("sendgrid", body, {})
    assert SharedCounts(fake_redis).read()["signature_failures"] == {("sendgrid",): 1}


def test_redis_down_changes_no_answer_and_logs_once_per_burst(
    fake_store, fake_redis, servicer, caplog
) -> None:
    service, signer = servicer
    fake_redis.down = True
    before = metrics.SIGNATURE_FAILURES.labels("sendgrid")._value.get()
    with caplog.at_level(logging.INFO, logger=metrics.__name__):
        body, headers = signed(signer)
        assert service.receive("sendgrid", body, headers) == 3
        with pytest.raises(Unauthenticated):
            service.receive("sendgrid", body, {})
        fake_redis.down = False
        with pytest.raises(Unauthenticated):
            service.receive("sendgrid", body, {})
    # The API's own counters count on.
    assert metrics.SIGNATURE_FAILURES.labels("sendgrid")._value.get() == before + 2
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == metrics.__name__
    ]
    assert len(warnings) == 1
    assert "not updated" in warnings[0].getMessage()
    assert "updated again" in caplog.text
    assert SharedCounts(fake_redis).read()["signature_failures"] == {("sendgrid",): 1}
