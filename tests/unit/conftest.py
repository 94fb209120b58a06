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
