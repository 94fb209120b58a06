"""The worker's collector of the cluster-wide provider event counts."""

import logging

from prometheus_client import CollectorRegistry, generate_latest

from core.provider_event_counts import SharedCounts, field
from workers.provider_event_metrics import ProviderEventCollector


def scrape(collector: ProviderEventCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_shared_counts_are_exposed_under_the_api_names(fake_redis) -> None:
    shared = SharedCounts(fake_redis)
    shared.add(
        {
            field("received", "postmark", "DELIVERED", "stored"): 2,
            field("signature_failures", "postmark"): 1,
            field("unmatched", "postmark"): 2,
        }
    )
    text = scrape(ProviderEventCollector(shared))
    assert (
        'mailroom_provider_events_received_total{outcome="stored",provider="postmark",'
        'type="DELIVERED"} 2.0' in text
    )
    assert 'mailroom_provider_event_signature_failures_total{provider="postmark"} 1.0' in text
    assert 'mailroom_provider_events_unmatched_total{provider="postmark"} 2.0' in text
    assert "# TYPE mailroom_provider_events_received_total counter" in text


def test_redis_down_at_scrape_yields_nothing_and_logs(fake_redis, caplog) -> None:
    fake_redis.down = True
    with caplog.at_level(logging.WARNING):
        text = scrape(ProviderEventCollector(SharedCounts(fake_redis)))
    assert "mailroom_provider" not in text
    assert "provider event counts not read" in caplog.text
