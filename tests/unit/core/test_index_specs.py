"""What ``ensure_indexes`` relies on when it drops every index but ``_id``'s on FerretDB."""

from core.store.connection import DOCUMENTS


def test_no_collection_declares_a_unique_secondary_index() -> None:
    # A unique index enforces something; dropping one on FerretDB would lose that, not only
    # a dead write (core.store.connection.ensure_indexes).
    declared = [
        (document.__name__, spec)
        for document in DOCUMENTS
        for spec in document._meta.get("index_specs") or []
    ]
    assert declared, "the documents declare their indexes"
    assert [(name, spec) for name, spec in declared if spec.get("unique")] == []
