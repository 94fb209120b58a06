"""Indexes per backend: MongoDB's own on MongoDB; on FerretDB, GIN indexes per collection only.

FerretDB 1.24 filters in PostgreSQL by JSON containment, which only the GIN indexes of
``devtools.postgres`` serve; the btree index it makes for a MongoDB index is written by every
insert and update and never read, so ``ensure_indexes`` drops those there.
"""

from urllib.parse import urlsplit

import pytest

from core.store.connection import ensure_indexes, is_ferretdb
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
    }
    assert _gin_fields(postgres_url, schema, "email_turns") == {"id", "list_buckets"}
    assert _gin_fields(postgres_url, schema, "idempotency_keys") == {"id"}
