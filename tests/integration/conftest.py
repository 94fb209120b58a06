"""Fixtures that run Mailroom's own processes against the real backing services.

``api`` and ``envoy`` are session-wide (a test that stops the API gets it back afterwards);
workers are per test, so each test chooses its providers and no worker of another test steals its
messages. After a test with workers, Redis is emptied.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import mongoengine
import pymongo
import pytest
import redis
from pymongo.errors import PyMongoError

from core.store.connection import connect
from devtools.envoy_config import write_envoy_config
from devtools.services import ManagedProcess, start_envoy
from helpers import SmtpSink, Tls, free_port, make_tls
from mailroom.v1 import mail_pb2_grpc
from mailroom_processes import ApiProcess

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def service_env(
    redis_server: ManagedProcess, mongo_uri: str, smtp_sink: SmtpSink
) -> dict[str, str]:
    """The MAILROOM_* settings every Mailroom process of the tests shares: fast retries."""
    return {
        "MAILROOM_MONGODB_URI": mongo_uri,
        "MAILROOM_REDIS_URL": redis_server.url,
        "MAILROOM_SMTP__HOST": smtp_sink.host,
        "MAILROOM_SMTP__PORT": str(smtp_sink.port),
        "MAILROOM_RETRY__MAX_RETRIES": "3",
        "MAILROOM_RETRY__MIN_BACKOFF_MS": "300",
        "MAILROOM_RETRY__MAX_BACKOFF_MS": "3000",
        "MAILROOM_LEASE_SECONDS": "20",
        "MAILROOM_METRICS_PORT": "0",
        "MAILROOM_SCHEDULER_METRICS_PORT": "0",
        "MAILROOM_API_METRICS_PORT": "0",
        "MAILROOM_LOG_LEVEL": "INFO",
        "MAILROOM_MESSAGE_ID_DOMAIN": "mailroom.test",
    }


@pytest.fixture(scope="session")
def api_process(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """The session's API server."""
    handle = ApiProcess(service_env, tmp_path_factory.mktemp("api") / "api.log").start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def api(api_process: ApiProcess) -> Iterator[ApiProcess]:
    """The running API; if the test stops it, it is started again afterwards."""
    api_process.start()
    yield api_process
    if not api_process.running:
        api_process.start()


@pytest.fixture
def mail_client(api: ApiProcess) -> Iterator[mail_pb2_grpc.MailServiceStub]:
    """A MailService stub connected to the API."""
    with grpc.insecure_channel(api.target) as channel:
        yield mail_pb2_grpc.MailServiceStub(channel)


class Envoy:
    """Envoy in front of the API; ``.url`` is the REST base URL."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], object]:
        """Send one HTTP request; return status, headers and the JSON (or text) body."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, hdrs, payload = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, hdrs, payload = err.code, dict(err.headers), err.read()
        try:
            parsed: object = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return status, {k.lower(): v for k, v in hdrs.items()}, parsed


@pytest.fixture(scope="session")
def envoy(api_process: ApiProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    """Envoy's gRPC-JSON transcoder in front of the session's API."""
    directory = tmp_path_factory.mktemp("envoy")
    port, admin_port = free_port(), free_port()
    config = write_envoy_config(
        directory / "envoy.yaml", listen_port=port, admin_port=admin_port, api_port=api_process.port
    )
    process = start_envoy(config, admin_port)
    try:
        yield Envoy(process, port)
    finally:
        process.stop()


class Front:
    """A private API with its own settings, and an Envoy in front of it (``.envoy``)."""

    def __init__(self, service_env: dict[str, str], tmp_path: Path, **extra: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.api = ApiProcess({**service_env, **extra}, tmp_path / "api.log").start()
        try:
            port, admin_port = free_port(), free_port()
            config = write_envoy_config(
                tmp_path / "envoy.yaml",
                listen_port=port,
                admin_port=admin_port,
                api_port=self.api.port,
            )
            self.envoy = Envoy(start_envoy(config, admin_port), port)
        except BaseException:
            self.api.stop()
            raise

    def stop(self) -> None:
        self.envoy.process.stop()
        self.api.stop()


@pytest.fixture
def private_front(service_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Front]]:
    """Start a :class:`Front` with extra MAILROOM_* settings; all stopped after the test.

    For tests that change settings, or leave an API with work in its backlog (a paused store).
    """
    fronts: list[Front] = []

    def start(**extra: str) -> Front:
        front = Front(service_env, tmp_path / str(len(fronts)), **extra)
        fronts.append(front)
        return front

    yield start
    for front in fronts:
        front.stop()


class WorkerProcess(ManagedProcess):
    """One ``mailroom-worker`` (a Dramatiq main process and its worker processes)."""


@pytest.fixture
def start_worker(
    service_env: dict[str, str], redis_server: ManagedProcess, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``mailroom-worker`` processes with extra MAILROOM_* settings; all stop after the test.

    Ready when its Dramatiq worker process has registered a heartbeat in Redis.
    """
    started: list[WorkerProcess] = []
    client = redis.Redis.from_url(redis_server.url)
    # Messages left by tests without workers must not reach this test's workers.
    client.flushdb()

    def start(**env: str) -> WorkerProcess:
        before = set(client.zrange("dramatiq:__heartbeats__", 0, -1))
        index = len(started)
        merged = {"MAILROOM_WORKER_PROCESSES": "1", "MAILROOM_WORKER_THREADS": "4", **env}

        def ready() -> bool:
            return bool(set(client.zrange("dramatiq:__heartbeats__", 0, -1)) - before)

        handle = WorkerProcess(
            f"worker{index}",
            [str(BIN / "mailroom-worker")],
            log_path=tmp_path / f"worker{index}.log",
            ready=ready,
            ready_timeout=30,
            env={**service_env, **merged},
        )
        started.append(handle)
        return handle.start()

    yield start
    for handle in started:
        handle.stop(timeout=15)
    if redis_server.running:
        # Leftover retries and messages must not reach the next test's workers.
        client.flushdb()
    client.close()


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One worker delivering through SMTP to the ``smtp_sink``."""
    return start_worker()


@pytest.fixture(scope="session")
def real_store(mongo_uri: str) -> Iterator[None]:
    """Connect this test process's mongoengine to the test database, to inspect emails."""
    connect(mongo_uri, timeout_ms=5000)
    yield
    mongoengine.disconnect()


@pytest.fixture(autouse=True)
def empty_suppression_list(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the store, empty the suppression list.

    The session's store is shared: an address one test suppressed (a provider's hard bounce for
    bob@example.com) would otherwise be dropped from the emails of every later test.
    """
    yield
    if "mongo_uri" not in request.fixturenames:
        return
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        request.getfixturevalue("mongo_uri"), serverSelectionTimeoutMS=5000
    )
    try:
        client.get_default_database()["suppressions"].delete_many({})
    except PyMongoError:
        pass  # the store is down for good: later tests fail on that, not on this
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_server: ManagedProcess) -> Iterator[redis.Redis]:
    """A Redis client on the test Redis."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """TLS contexts for SMTP servers in the tests (STARTTLS and implicit TLS)."""
    return make_tls(tmp_path_factory.mktemp("tls"))
