"""Indexes per backend: MongoDB's own on MongoDB; on FerretDB, GIN indexes per collection only.

FerretDB 1.24 filters in PostgreSQL by JSON containment, which only the GIN indexes of
``devtools.postgres`` serve; the btree index it makes for a MongoDB index is written by every
insert and update and never read, so ``ensure_indexes`` drops those there.
"""

import uuid
from urllib.parse import urlsplit

import pytest

from core.store.connection import ensure_indexes, is_ferretdb
from core.store.documents import Email
from core.store.events import StoredProviderEvent
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
    if not is_ferretdb(emails.database):
        assert "status_1__id_1" in names
        assert len(names) == 1 + len(Email._meta["index_specs"]), names
        return
    assert names == {"_id_"}
    # The filters that reach PostgreSQL find an index of their own there instead.
    postgres_url = request.getfixturevalue("postgres_server").url
    schema = emails.database.name
    assert _gin_fields(postgres_url, schema, "emails") == {
        "id",
        "status",
        "recipients",
        "tags",
        "metadata_pairs",
        "provider",
        "idempotency_key",
        "list_buckets",
        "message_id",
        "provider_message_id",
    }
    assert _gin_fields(postgres_url, schema, "provider_events") == {
        "id",
        "email_id",
        "provider",
        "provider_message_id",
        "message_id",
    }
    assert _gin_fields(postgres_url, schema, "email_turns") == {"id", "list_buckets"}
    assert _gin_fields(postgres_url, schema, "idempotency_keys") == {"id"}


def test_a_provider_events_lookups_reach_an_index_on_ferretdb(real_store: None) -> None:
    """What core.store.events asks when an event comes: equalities PostgreSQL finds by index."""
    database = Email._get_db()
    if not is_ferretdb(database):
        pytest.skip("FerretDB's pushdown to PostgreSQL")
    ensure_indexes()
    suffix = uuid.uuid4().hex
    Email._get_collection().insert_one(
        {"status": "SENT", "message_id": f"<m{suffix}@x>", "provider_message_id": f"p{suffix}"}
    )
    StoredProviderEvent._get_collection().insert_one(
        {"_id": f"k{suffix}", "provider": f"prov{suffix}", "email_id": "", "message_id": "x"}
    )
    for collection, query, index in [
        ("emails", {"provider_message_id": f"p{suffix}"}, "provider_message_id_gin"),
        ("emails", {"message_id": f"<m{suffix}@x>"}, "message_id_gin"),
        (
            "provider_events",
            {"provider_message_id": f"p{suffix}", "email_id": "", "provider": f"prov{suffix}"},
            "_gin",
        ),
        ("provider_events", {"email_id": suffix}, "email_id_gin"),
    ]:
        plan = database.command({"explain": {"find": collection, "filter": query, "limit": 1}})
        assert plan["filterPushdown"] is True, (query, plan)
        text = str(plan["queryPlanner"])
        assert "Seq Scan" not in text, (query, text)
        assert index in text, (query, text)
