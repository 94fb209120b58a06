"""Indexes per backend: MongoDB's own on MongoDB; on FerretDB, GIN indexes per collection only.

FerretDB 1.24 filters in PostgreSQL by JSON containment, which only the GIN indexes of
``devtools.postgres`` serve; the btree index it makes for a MongoDB index is written by every
insert and update and never read, so ``ensure_indexes`` drops those there.
"""

import json
from urllib.parse import urlsplit

import pytest

from core.store.backend import is_ferretdb_v1
from core.store.connection import ensure_indexes
from core.store.documents import Email
from devtools import postgres


def _gin_fields(postgres_url: str, schema: str, collection: str) -> set[str]:
    parts = urlsplit(postgres_url)
    rows = postgres._psql(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        "SELECT indexname FROM pg_indexes "
        f"WHERE schemaname = '{schema}' AND tablename LIKE '{collection}\\_________' "
        "AND indexname LIKE '%\\_gin'",
        database=postgres.FERRETDB_DATABASE,
    )
    # <table>_<field>_gin, the field's underscores trimmed (see mailroom_gin_index_name).
    return {
        name.split("_", len(collection.split("_")) + 1)[-1][: -len("_gin")] for name in rows.split()
    }


def test_ensure_indexes_keeps_what_each_backend_reads(
    real_store: None, request: pytest.FixtureRequest
) -> None:
    emails = Email._get_collection()
    # A declared index, as an older checkout made it on FerretDB too.
    emails.create_index([("status", 1), ("_id", 1)])

    ensure_indexes()
    ensure_indexes()  # as every API and scheduler process does at start

    names = set(emails.index_information())
    if not is_ferretdb_v1(emails.database):
        assert "status_1__id_1" in names
        assert len(names) == 1 + len(Email._meta["index_specs"]), names
        return
    assert names == {"_id_"}
    # The filters that reach PostgreSQL find an index of their own there instead.
    postgres_url = request.getfixturevalue("postgres_server").url
    schema = emails.database.name
    expected = {
        "emails": {
            *("id", "status", "recipients", "tags", "metadata_pairs", "provider"),
            *("idempotency_key", "list_buckets", "message_id", "provider_message_id"),
        },
        "provider_events": {"id", "email_id", "provider", "provider_message_id", "message_id"},
        "email_turns": {"id", "list_buckets"},
        "idempotency_keys": {"id"},
        "webhook_deliveries": {"id", "state", "subscription_id", "email_id"},
        "suppressions": {"id", "reason"},
        "dead_letters": {"id"},
        "webhook_subscriptions": {"id"},
    }
    assert {name: _gin_fields(postgres_url, schema, name) for name in expected} == expected


def test_a_provider_events_lookups_reach_an_index_on_ferretdb(
    real_store: None, request: pytest.FixtureRequest
) -> None:
    """What core.store.events asks when an event comes: equalities PostgreSQL can index."""
    database = Email._get_db()
    if not is_ferretdb_v1(database):
        pytest.skip("FerretDB's pushdown to PostgreSQL")
    ensure_indexes()
    parts = urlsplit(request.getfixturevalue("postgres_server").url)
    lookups = [
        ("emails", {"provider_message_id": "p1"}, ["provider_message_id"]),
        ("emails", {"message_id": "<m1@x>"}, ["message_id"]),
        (
            "provider_events",
            {"provider_message_id": "p1", "email_id": "", "provider": "sendgrid"},
            ["provider_message_id", "email_id", "provider"],
        ),
        ("provider_events", {"email_id": "e1"}, ["email_id"]),
    ]
    for collection, query, fields in lookups:
        plan = database.command({"explain": {"find": collection, "filter": query, "limit": 1}})
        assert plan["filterPushdown"] is True, (query, plan)
        # The pushed-down shape (see test_services), planned as if the table were large: that
        # a GIN index can serve it, whatever the planner prefers for today's few rows.
        [table] = postgres._psql(
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            f"SELECT tablename FROM pg_tables WHERE schemaname = '{database.name}' "
            f"AND tablename LIKE '{collection}\\_________'",
            database=postgres.FERRETDB_DATABASE,
        ).split()
        where = " AND ".join(f"_jsonb->'{f}' @> '{json.dumps(query[f])}'" for f in fields)
        text = postgres._psql(
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            "SET enable_seqscan = off; "
            f"EXPLAIN SELECT _jsonb FROM {database.name}.{table} WHERE {where}",
            database=postgres.FERRETDB_DATABASE,
        )
        assert "Seq Scan" not in text, (query, text)
        assert any(f"{field}_gin" in text for field in fields), (query, text)
