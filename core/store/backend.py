"""Which server the store is: MongoDB, or FerretDB (1.x hands PostgreSQL only equalities)."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure

# By database name; a process talks to one server.
_versions: dict[str, str] = {}


def ferretdb_version(database: Database[Any]) -> str:
    """FerretDB's version (e.g. ``"v1.24.2"``), or ``""`` for MongoDB.

    Asked once per database and process (``buildInfo``). A store that cannot tell (mongomock in
    the unit tests) is taken for MongoDB.

    Raises:
        PyMongoError: The server is unreachable.
    """
    if database.name not in _versions:
        try:
            info = database.command("buildInfo")
        except (OperationFailure, NotImplementedError):
            info = {}
        _versions[database.name] = str(info.get("ferretdbVersion", ""))
    return _versions[database.name]


def is_ferretdb_v1(database: Database[Any]) -> bool:
    """Whether the store is FerretDB 1.x.

    Its filters reach PostgreSQL only as equalities (no ``$in``, no ranges), served by GIN
    indexes alone, and it sorts in memory: a MongoDB index is never read there.
    """
    return ferretdb_version(database).startswith("v1.")
