import mongoengine
import mongomock
import pytest

from core.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        retry={"max_retries": 3, "min_backoff_ms": 100, "max_backoff_ms": 1000},
        lease_seconds=30,
    )


@pytest.fixture
def fake_store():
    """An in-memory MongoDB (mongomock) behind mongoengine's default connection."""
    mongoengine.disconnect()
    mongoengine.connect(
        "mailroom-unit", host="mongodb://localhost", mongo_client_class=mongomock.MongoClient
    )
    yield
    mongoengine.disconnect()


class FakeWebhookQueue:
    """Stands in for :class:`core.events_out.WebhookQueue`: records the enqueued delivery ids."""

    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue(self, delivery_id: str, *, delay_ms: int | None = None) -> None:
        self.enqueued.append(delivery_id)


@pytest.fixture
def webhook_queue(monkeypatch: pytest.MonkeyPatch) -> FakeWebhookQueue:
    """This process's webhook queue, replaced by a fake that records what is enqueued."""
    from core import events_out

    fake = FakeWebhookQueue()
    monkeypatch.setattr(events_out, "_queue", fake)
    return fake
