"""Smoke tests of the shared fixtures and of server.devtools (real processes on loopback)."""

from __future__ import annotations

import functools
import json
import os
import pwd
import signal
import smtplib
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pymongo
import pymongo.database
import pytest
import redis

from devtools import postgres
from devtools.services import (
    FERRETDB_GOGC,
    BinaryNotFoundError,
    ManagedProcess,
    ServiceError,
    binary_dirs,
    create_postgres_database,
    find_binary,
    start_envoy,
    start_ferretdb,
    start_postgres,
)
from helpers import SmtpSink, free_port, wait_until


def _email(subject: str = "Hello", to: str = "to@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "from@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Body text\n")
    return msg


def _send(sink: SmtpSink, msg: EmailMessage, to_addrs: list[str] | None = None) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.send_message(msg, to_addrs=to_addrs)


# -- Redis -------------------------------------------------------------------------------------


def test_redis_answers_and_keeps_data_across_restart(redis_server: ManagedProcess) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.set("mailroom:test:persist", b"kept")
    old_pid = redis_server.pid

    redis_server.restart()

    assert redis_server.pid != old_pid
    assert redis.Redis.from_url(redis_server.url).get("mailroom:test:persist") == b"kept"


def test_stopped_redis_refuses_and_is_back_for_the_next_test(redis_server: ManagedProcess) -> None:
    redis_server.stop()
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_redis_restored_after_a_test_stopped_it(redis_server: ManagedProcess) -> None:
    # Runs after the test above: the autouse fixture started the same server again.
    assert redis_server.running
    assert redis.Redis.from_url(redis_server.url).ping()


# -- MongoDB -----------------------------------------------------------------------------------


def test_mongo_uri_names_a_database_that_stores_documents(mongo_uri: str) -> None:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        db = client.get_default_database()
        assert db.name.startswith("mailroom_test_")
        db.smoke.insert_one({"_id": "a", "to": ["x@example.com"]})
        assert db.smoke.find_one({"_id": "a"}) == {"_id": "a", "to": ["x@example.com"]}
    finally:
        client.close()


def _mongo(uri: str) -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)


def _sql(postgres_server: ManagedProcess, statement: str) -> str:
    """``statement``'s output in FerretDB's database on the session's PostgreSQL."""
    port = int(postgres_server.url.rsplit(":", 1)[1].split("/")[0])
    return postgres._psql("127.0.0.1", port, statement, database=postgres.FERRETDB_DATABASE)


def test_session_ferretdb_restarts_alone_and_keeps_data(
    mongo_server: ManagedProcess, postgres_server: ManagedProcess
) -> None:
    client = _mongo(mongo_server.uri)
    try:
        client.services_test.docs.insert_one({"_id": "kept", "n": 1})
    finally:
        client.close()
    postgres_pid = postgres_server.pid

    mongo_server.restart()

    assert postgres_server.pid == postgres_pid
    client = _mongo(mongo_server.uri)
    try:
        assert client.services_test.docs.find_one({"_id": "kept"}) == {"_id": "kept", "n": 1}
        client.drop_database("services_test")
    finally:
        client.close()


def test_ferretdb_lookups_by_id_and_status_use_an_index_not_a_table_scan(
    mongo_server: ManagedProcess, postgres_server: ManagedProcess
) -> None:
    client = _mongo(mongo_server.uri)
    try:
        client.gin_test.emails.insert_many(
            [{"_id": f"e{i}", "status": "SENT"} for i in range(2000)]
        )
        port = int(postgres_server.url.rsplit(":", 1)[1].split("/")[0])
        schema_tables = postgres._psql(
            "127.0.0.1",
            port,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'gin_test' "
            "AND tablename LIKE 'emails%'",
            database="ferretdb",
        )
        [table] = schema_tables.split()
        # The shape of FerretDB 1.24's pushed-down filter, as the PostgreSQL log shows it.
        plans = {
            field: postgres._psql(
                "127.0.0.1",
                port,
                f"ANALYZE gin_test.{table}; EXPLAIN SELECT _jsonb FROM gin_test.{table} "
                f"WHERE _jsonb->'{field}' @> '\"{value}\"'",
                database="ferretdb",
            )
            for field, value in (("_id", "e7"), ("status", "QUEUED"))
        }
    finally:
        client.drop_database("gin_test")
        client.close()
    assert "_id_gin" in plans["_id"], plans["_id"]
    assert "status_gin" in plans["status"], plans["status"]
    assert "Seq Scan" not in plans["_id"]


# -- PostgreSQL and FerretDB -------------------------------------------------------------------


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_postgres_finds_debian_binaries_off_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian installs initdb and postgres in /usr/lib/postgresql/<version>/bin, not on PATH.
    monkeypatch.setenv("PATH", "/nonexistent")
    postgres = Path(find_binary("postgres"))
    assert Path(find_binary("initdb")).parent == postgres.parent
    assert postgres.parent in binary_dirs()


def test_ferretdb_on_a_new_postgres_cluster_keeps_documents_across_restarts(
    postgres_data_dir: Path, tmp_path: Path
) -> None:
    postgres = start_postgres(free_port(), postgres_data_dir, log_path=tmp_path / "pg.log")
    ferretdb: ManagedProcess | None = None
    try:
        assert postgres.url.startswith("postgres://postgres@127.0.0.1:")
        assert postgres.url.endswith("/ferretdb")
        assert (postgres_data_dir / "PG_VERSION").is_file()
        assert postgres.stop_signal == signal.SIGINT
        if os.geteuid() == 0:
            # PostgreSQL refuses root: the cluster belongs to, and runs as, the postgres user.
            postgres_uid = pwd.getpwnam("postgres").pw_uid
            assert postgres_data_dir.stat().st_uid == postgres_uid
            assert postgres.pid is not None and _uid_of(postgres.pid) == postgres_uid

        ferretdb = start_ferretdb(free_port(), tmp_path / "ferretdb", postgresql_url=postgres.url)
        # Go's collector tuned for FerretDB's small heap, unless the caller chose a GOGC.
        assert ferretdb.pid is not None
        environ = Path(f"/proc/{ferretdb.pid}/environ").read_bytes().split(b"\0")
        assert f"GOGC={os.environ.get('GOGC', FERRETDB_GOGC)}".encode() in environ
        client = _mongo(ferretdb.uri + "shop")
        try:
            orders = client.get_default_database().orders
            orders.insert_many([{"_id": i, "item": f"i{i}", "qty": i * 10} for i in range(5)])
            assert [d["_id"] for d in orders.find({"qty": {"$gte": 20}}).sort("_id", 1)] == [
                2,
                3,
                4,
            ]
        finally:
            client.close()

        # Fast shutdown: FerretDB's open connections do not hold PostgreSQL up until SIGKILL.
        assert postgres.stop() == 0
        postgres.start()  # the same cluster: no second initdb
        ferretdb.restart()

        client = _mongo(ferretdb.uri + "shop")
        try:
            orders = client.get_default_database().orders
            assert orders.find_one({"_id": 3}) == {"_id": 3, "item": "i3", "qty": 30}
            assert orders.count_documents({}) == 5
        finally:
            client.close()
        assert (tmp_path / "pg.log").read_text().count("creating configuration files") == 1
    finally:
        if ferretdb is not None:
            ferretdb.stop()
        postgres.stop()


def test_postgres_reuses_an_existing_cluster(postgres_data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "pg.log"
    with start_postgres(free_port(), postgres_data_dir, log_path=log) as first:
        url = create_postgres_database(first, "kept_db")
        assert url == first.url.rsplit("/", 1)[0] + "/kept_db"
    # A second start on the same directory (another `make dev`) skips initdb and keeps databases.
    with start_postgres(free_port(), postgres_data_dir, log_path=log) as second:
        assert create_postgres_database(second, "kept_db").endswith("/kept_db")
    assert log.read_text().count("creating configuration files") == 1


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")


@as_root
def test_postgres_as_root_names_the_fix_for_an_unreachable_directory(tmp_path: Path) -> None:
    # pytest's base temp dir is 0700: the postgres user cannot traverse it.
    with pytest.raises(ServiceError, match=r"cannot reach .*chmod o\+x"):
        start_postgres(free_port(), tmp_path / "data")


@as_root
def test_postgres_as_root_without_a_postgres_user_names_the_fix(
    postgres_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "POSTGRES_SYSTEM_USER", "mailroom-no-such-user")
    with pytest.raises(ServiceError, match=r"refuses to run as root.*apt-get install postgresql"):
        start_postgres(free_port(), postgres_data_dir)


# -- SMTP sink ---------------------------------------------------------------------------------


def test_sink_records_message_and_envelope(smtp_sink: SmtpSink) -> None:
    _send(smtp_sink, _email("Welcome"), to_addrs=["to@example.com", "hidden@example.com"])

    [received] = smtp_sink.wait_for_count(1, timeout=5)
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com", "hidden@example.com"]
    assert received.message["Subject"] == "Welcome"
    assert received.message.get_content() == "Body text\n"
    assert b"Subject: Welcome" in received.raw
    assert "hidden@example.com" not in received.raw.decode()


def test_sink_is_empty_at_the_start_of_each_test(smtp_sink: SmtpSink) -> None:
    assert smtp_sink.messages == []


def test_sink_refuses_data_as_told_then_accepts(smtp_sink: SmtpSink) -> None:
    smtp_sink.respond_with(451, "try again later", times=1)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(smtp_sink, _email("first"))
    assert refused.value.smtp_code == 451

    _send(smtp_sink, _email("second"))
    [received] = smtp_sink.wait_for_count(1, timeout=5)
    assert received.message["Subject"] == "second"
    assert smtp_sink.data_commands == 2


def test_sink_refuses_recipient_permanently(smtp_sink: SmtpSink) -> None:
    smtp_sink.respond_with(550, "no such user", stage="RCPT")

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(smtp_sink, _email())
    assert refused.value.recipients["to@example.com"][0] == 550
    assert smtp_sink.messages == []


def test_sink_delay_slows_each_delivery_without_serializing_them(smtp_sink: SmtpSink) -> None:
    delay = 2.0
    smtp_sink.delay(delay)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            _send(smtp_sink, _email(f"m{i}"))
        except BaseException as exc:
            errors.append(exc)

    def all_inside_data_at_once() -> bool:
        # Read the DATA count first: messages only grow, so none was accepted when it was 3.
        inside = smtp_sink.data_commands
        return inside == 3 and smtp_sink.messages == []

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    # Not serialized: all three are held in DATA at the same moment (one after another, the
    # second DATA would only come after the first message was accepted).
    wait_until(
        all_inside_data_at_once, timeout=10, interval=0.01, message="three DATA held at once"
    )
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started

    assert errors == []
    assert len(smtp_sink.messages) == 3
    assert elapsed >= delay  # each delivery waited


def test_wait_for_count_fails_with_a_clear_message(smtp_sink: SmtpSink) -> None:
    with pytest.raises(AssertionError, match="received 0 message"):
        smtp_sink.wait_for_count(1, timeout=0.2)


def test_smtp_sink_command_writes_eml_and_envelope(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "mail"
    sink = ManagedProcess(
        "smtp-sink",
        [sys.executable, "-m", "devtools.smtp_sink", "--port", str(port), "--dir", str(out)],
        log_path=tmp_path / "sink.log",
        cwd=Path(__file__).resolve().parents[2],
        ready=lambda: smtplib.SMTP("127.0.0.1", port, timeout=1).quit() is not None,
        ready_timeout=20,
    )
    with sink:
        msg = _email("On disk")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(msg, to_addrs=["to@example.com", "bcc@example.com"])
        [eml] = wait_until(
            lambda: list(out.glob("*.eml")), timeout=5, message="the sink wrote an .eml file"
        )
        assert b"Subject: On disk" in eml.read_bytes()
        envelope = json.loads(eml.with_suffix(".json").read_text())
        assert envelope["mail_from"] == "from@example.com"
        assert envelope["rcpt_tos"] == ["to@example.com", "bcc@example.com"]
    # SIGTERM ends it cleanly.
    assert sink.returncode == 0


# -- services ----------------------------------------------------------------------------------


def test_envoy_is_ready_when_admin_answers_live(tmp_path: Path) -> None:
    admin_port = free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        "admin:\n"
        "  address:\n"
        f"    socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}\n"
    )
    envoy = start_envoy(config, admin_port)
    try:
        assert envoy.url == f"http://127.0.0.1:{admin_port}"
        assert envoy.running
    finally:
        envoy.stop()
    assert not envoy.running


def test_process_that_exits_early_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "broken",
        [sys.executable, "-c", "print('bad config line 3'); raise SystemExit(2)"],
        log_path=tmp_path / "broken.log",
        ready=lambda: False,
    )
    with pytest.raises(ServiceError, match=r"(?s)exited with code 2.*bad config line 3"):
        proc.start()


def test_missing_binary_names_how_to_install() -> None:
    with pytest.raises(BinaryNotFoundError, match="install"):
        find_binary("mailroom-no-such-tool")


def test_wait_until_returns_first_truthy_value_or_fails_with_message() -> None:
    calls = iter([0, None, "found"])
    assert wait_until(lambda: next(calls), timeout=2, interval=0.01, message="x") == "found"
    with pytest.raises(AssertionError, match="never true"):
        wait_until(lambda: False, timeout=0.1, message="never true")


def test_analyze_gives_ferretdbs_tables_their_planner_statistics(
    mongo_server: ManagedProcess, postgres_server: ManagedProcess
) -> None:
    client = _mongo(mongo_server.uri)
    try:
        client.analyze_test.emails.insert_many([{"_id": f"e{i}", "n": i} for i in range(500)])
        sql = functools.partial(_sql, postgres_server)

        def analyzed() -> str:
            return sql(
                "SELECT count(*) FROM pg_stat_user_tables "
                "WHERE schemaname = 'analyze_test' AND relname LIKE 'emails_%' "
                "AND last_analyze IS NOT NULL"
            )

        table = sql(
            "SELECT tablename FROM pg_tables "
            "WHERE schemaname = 'analyze_test' AND tablename LIKE 'emails_%'"
        )
        # autovacuum must not analyze it first, on a busy machine
        sql(f"ALTER TABLE analyze_test.{table} SET (autovacuum_enabled = false)")
        assert analyzed() == "0"  # a fresh bulk load: no statistics yet
        postgres.analyze(postgres_server)
        assert analyzed() == "1"
    finally:
        client.drop_database("analyze_test")
        client.close()


@pytest.fixture
def gin_test(mongo_server: ManagedProcess) -> Iterator[pymongo.database.Database[Any]]:
    """A database of the session's FerretDB for one test, dropped after it."""
    client = _mongo(mongo_server.uri)
    try:
        yield client.gin_test
    finally:
        client.drop_database("gin_test")
        client.close()


def _gin_indexes(postgres_server: ManagedProcess, table_prefix: str) -> set[str]:
    """``<index> <options>`` of each GIN index of gin_test's tables named ``<prefix>_…``."""
    like = table_prefix.replace("_", "\\_")
    return set(
        _sql(
            postgres_server,
            "SELECT indexname || ' ' || coalesce(array_to_string(c.reloptions, ','), '') "
            "FROM pg_indexes JOIN pg_class AS c ON c.relname = indexname "
            f"WHERE schemaname = 'gin_test' AND tablename LIKE '{like}\\_%' "
            "AND indexname LIKE '%\\_gin'",
        ).splitlines()
    )


def test_ferretdbs_gin_indexes_take_new_entries_into_the_tree_even_an_older_clusters(
    gin_test: pymongo.database.Database[Any], postgres_server: ManagedProcess
) -> None:
    # A pending list (PostgreSQL's default) is read end to end by every lookup until vacuum
    # merges it: finds by _id after a burst of inserts cost three times the CPU.
    gin_test.emails.insert_one({"_id": "e1", "status": "QUEUED"})
    made = _gin_indexes(postgres_server, "emails")
    assert len(made) == 10, made  # _id, status, the ListEmails filters, the message ids
    assert all(line.endswith(" fastupdate=off") for line in made), made
    # An index of an older checkout, with a pending list: a new start turns it off.
    index = sorted(made)[0].split()[0]
    _sql(postgres_server, f"ALTER INDEX gin_test.{index} SET (fastupdate = on)")
    assert f"{index} fastupdate=on" in _gin_indexes(postgres_server, "emails")
    create_postgres_database(postgres_server, postgres.FERRETDB_DATABASE)
    assert f"{index} fastupdate=off" in _gin_indexes(postgres_server, "emails")


def test_an_older_clusters_gin_indexes_for_fields_a_collection_never_filters_on_are_dropped(
    gin_test: pymongo.database.Database[Any], postgres_server: ManagedProcess
) -> None:
    # Every index is written by every insert: a turn is inserted per claim, and the eight GIN
    # indexes an older checkout gave its table were six more than its lookups read.
    gin_test.email_turns.insert_one({"_id": "e1:1", "purpose": "claim"})
    made = {line.split()[0] for line in _gin_indexes(postgres_server, "email_turns")}
    assert {name.rsplit("_", 2)[-2] for name in made} == {"id", "buckets"}, made
    table = sorted(made)[0].rsplit("_", 2)[0]
    _sql(
        postgres_server,
        f"CREATE INDEX {table}_status_gin ON gin_test.{table} "
        "USING gin ((_jsonb->'status') jsonb_path_ops)",
    )
    assert len(_gin_indexes(postgres_server, "email_turns")) == 3
    create_postgres_database(postgres_server, postgres.FERRETDB_DATABASE)
    assert {line.split()[0] for line in _gin_indexes(postgres_server, "email_turns")} == made
    # What remains still serves the turns' lookups.
    assert gin_test.email_turns.find_one({"_id": "e1:1"})["purpose"] == "claim"
