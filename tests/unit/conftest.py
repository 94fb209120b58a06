from __future__ import annotations

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


class FakeRedisHashes:
    """Stands in for a redis-py client's hash commands; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.round_trips = 0
        self.down = False

    def _trip(self) -> None:
        import redis

        if self.down:
            raise redis.ConnectionError("Connection refused")
        self.round_trips += 1

    def _hincrby(self, key: str, name: str, amount: int) -> None:
        fields = self.hashes.setdefault(key, {})
        fields[name.encode()] = str(int(fields.get(name.encode(), b"0")) + amount).encode()

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        self._trip()
        return dict(self.hashes.get(key, {}))

    def pipeline(self, transaction: bool = True) -> FakeRedisPipeline:
        return FakeRedisPipeline(self)

    def close(self) -> None:
        pass


class FakeRedisPipeline:
    """Buffers ``hincrby`` calls until ``execute`` (one round trip)."""

    def __init__(self, client: FakeRedisHashes) -> None:
        self.client = client
        self.calls: list[tuple[str, str, int]] = []

    def hincrby(self, key: str, name: str, amount: int) -> None:
        self.calls.append((key, name, amount))

    def execute(self) -> None:
        self.client._trip()
        for call in self.calls:
            self.client._hincrby(*call)


@pytest.fixture
def fake_redis() -> FakeRedisHashes:
    """An in-memory stand-in for the Redis hash commands."""
    return FakeRedisHashes()
