"""``ensure_indexes`` on FerretDB: what it relies on when it drops every index but ``_id``'s."""

import pytest
from pymongo.errors import OperationFailure

from core.store import connection
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


class _RacedCollection:
    """A FerretDB collection another process set up between our look and our write."""

    name = "emails"

    def __init__(self, drop_error_code: int) -> None:
        self.database = self
        self.drop_error_code = drop_error_code
        self.dropped: list[str] = []

    def create_collection(self, name: str) -> None:
        raise OperationFailure("Collection already exists", code=48)

    def index_information(self) -> dict[str, object]:
        return {"_id_": {}, "status_1__id_1": {}}

    def drop_index(self, name: str) -> None:
        self.dropped.append(name)
        raise OperationFailure("index not found", code=self.drop_error_code)


class _Document:
    def __init__(self, collection: _RacedCollection) -> None:
        self.collection = collection

    def _get_collection(self) -> _RacedCollection:
        return self.collection


def test_ferretdb_set_up_by_another_process_meanwhile_is_no_error(monkeypatch) -> None:
    # The API and the scheduler start together and run this at once.
    collection = _RacedCollection(drop_error_code=27)
    monkeypatch.setattr(connection, "DOCUMENTS", (_Document(collection),))
    monkeypatch.setattr(connection, "is_ferretdb_v1", lambda database: True)
    connection.ensure_indexes()
    assert collection.dropped == ["status_1__id_1"]


def test_another_failure_to_drop_an_index_is_raised(monkeypatch) -> None:
    collection = _RacedCollection(drop_error_code=13)  # Unauthorized
    monkeypatch.setattr(connection, "DOCUMENTS", (_Document(collection),))
    monkeypatch.setattr(connection, "is_ferretdb_v1", lambda database: True)
    with pytest.raises(OperationFailure):
        connection.ensure_indexes()
