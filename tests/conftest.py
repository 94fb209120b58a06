"""Fixtures shared by unit and integration tests: real Redis, MongoDB (FerretDB) and SMTP sink.

The backing processes and the SMTP sink are session-wide and run on free ports of 127.0.0.1:
MongoDB is FerretDB on a private PostgreSQL cluster made for the run. A test may stop or kill a
process (``redis_server.stop()``, ``mongo_server.stop()``); it is started again, with the same
port and data, after that test. The sink is emptied (messages, faults, delay) before each test
that uses it.

A missing binary makes the tests that need it fail, never skip; with ``CI=true`` the whole run
stops at once if any of REQUIRED_BINARIES is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest

from devtools.services import (
    BinaryNotFoundError,
    ManagedProcess,
    find_binary,
    start_ferretdb,
    start_postgres,
    start_redis,
)
from helpers import SmtpSink, free_port, postgres_traversable_dir

REQUIRED_BINARIES = (
    "redis-server",
    "postgres",
    "initdb",
    "pg_isready",
    "psql",
    "ferretdb",
    "envoy",
    "protoc-gen-openapi",  # scripts/gen_proto.py --check (tests/unit/server/test_generated.py)
    "chromium",  # tests/integration/test_api_docs.py
)

# Session processes started by the fixtures below, restarted after a test that stopped them.
_services: list[ManagedProcess] = []
_sinks: list[SmtpSink] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing_binaries() -> list[str]:
    missing = []
    for name in REQUIRED_BINARIES:
        try:
            find_binary(name)
        except BinaryNotFoundError as exc:
            missing.append(str(exc))
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI, refuse to run at all without the binaries the integration tests need."""
    if _in_ci():
        missing = _missing_binaries()
        if missing:
            pytest.exit(
                "CI=true and required binaries are missing (run scripts/install_tools.sh):\n"
                + "\n".join(missing),
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def _require(name: str) -> None:
    try:
        find_binary(name)
    except BinaryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _isolate_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty the SMTP sink before a test; restart any process the test stopped, after it."""
    if "smtp_sink" in request.fixturenames:
        for sink in _sinks:
            sink.clear()
    yield
    for service in _services:
        if not service.running:
            service.start()


def _tracked(handle: ManagedProcess) -> Iterator[ManagedProcess]:
    """Yield a started service, listed in ``_services`` while it runs; stop it afterwards."""
    _services.append(handle)
    try:
        yield handle
    finally:
        _services.remove(handle)
        handle.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A redis-server for the session; ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    _require("redis-server")
    yield from _tracked(start_redis(free_port(), tmp_path_factory.mktemp("redis")))


@pytest.fixture
def postgres_data_dir() -> Iterator[Path]:
    """A path for a new PostgreSQL cluster (not yet created), removed after the test.

    Not under pytest's temp dirs: as root, PostgreSQL runs as the ``postgres`` user, who cannot
    traverse pytest's 0700 base directory. The parent is made with ``tempfile.mkdtemp`` in the
    system temp dir and opened for traversal (0711) only.
    """
    with postgres_traversable_dir("mailroom-pg-", "data") as data_dir:
        yield data_dir


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A private PostgreSQL cluster for the session; ``.url`` names its ``ferretdb`` database.

    The cluster is removed at the end; its log stays in pytest's temp dir.
    """
    for name in ("postgres", "initdb", "pg_isready", "psql"):
        _require(name)
    log_path = tmp_path_factory.mktemp("postgres") / "postgres.log"
    with postgres_traversable_dir("mailroom-pg-", "data") as data_dir:
        yield from _tracked(start_postgres(free_port(), data_dir, log_path=log_path))


@pytest.fixture(scope="session")
def mongo_server(
    postgres_server: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """FerretDB on ``postgres_server``, even when an external MongoDB is configured.

    Tests that take the database down stop or pause this one (PostgreSQL keeps running);
    ``.uri`` has no database name.
    """
    _require("ferretdb")
    state_dir = tmp_path_factory.mktemp("ferretdb")
    yield from _tracked(start_ferretdb(free_port(), state_dir, postgresql_url=postgres_server.url))


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def mongo_uri(request: pytest.FixtureRequest) -> Iterator[str]:
    """A MongoDB URI that names a database of this session's own.

    ``MAILROOM_TEST_MONGODB_URI`` points the tests at a real MongoDB (a unique database is
    created there and dropped at the end, and no PostgreSQL or FerretDB is started); otherwise
    FerretDB on a private PostgreSQL cluster (``mongo_server``).
    """
    external = os.environ.get("MAILROOM_TEST_MONGODB_URI")
    database = f"mailroom_test_{uuid.uuid4().hex[:8]}"
    if not external:
        server: ManagedProcess = request.getfixturevalue("mongo_server")
        yield _with_database(server.uri, database)
        return
    uri = _with_database(external, database)
    try:
        yield uri
    finally:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=5000
        )
        try:
            client.drop_database(database)
        finally:
            client.close()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """An in-process SMTP sink for the session, emptied before each test that uses it."""
    sink = SmtpSink().start()
    _sinks.append(sink)
    try:
        yield sink
    finally:
        _sinks.remove(sink)
        sink.stop()
