"""Connecting to MongoDB and creating indexes once it answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import mongoengine
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from core.store.backend import is_ferretdb_v1
from core.store.documents import DeadLetter, Email, EmailTurn, IdempotencyKey
from core.store.events import StoredProviderEvent
from core.store.suppressions import Suppression
from core.store.webhooks import WEBHOOK_DOCUMENTS, cache_subscriptions

log = logging.getLogger(__name__)

# MongoDB's error codes, FerretDB's too.
_INDEX_NOT_FOUND = 27
_NAMESPACE_EXISTS = 48

DOCUMENTS: tuple[type[mongoengine.Document], ...] = (
    Email,
    EmailTurn,
    IdempotencyKey,
    DeadLetter,
    Suppression,
    StoredProviderEvent,
    *WEBHOOK_DOCUMENTS,
)


def connect(
    uri: str,
    *,
    timeout_ms: int,
    operation_timeout_ms: int | None = None,
    subscriptions_max_age_seconds: float = 0.0,
) -> None:
    """Register the default mongoengine connection without touching the network.

    pymongo clients are not fork-safe, so each process (each Dramatiq worker process after the
    fork) calls this itself. Short timeouts make an unreachable MongoDB fail a request in well
    under 3 seconds instead of pymongo's 30 s server selection.

    Args:
        uri: The MongoDB URI, including the database name.
        timeout_ms: Server selection and connect timeout.
        operation_timeout_ms: A bound on each whole operation, retries and reconnects
            included (pymongo's ``timeoutMS``). The API passes one, so a MongoDB that accepts
            connections but stalls still fails a request within its 3 s budget; workers keep
            pymongo's patient defaults.
        subscriptions_max_age_seconds: How old this process's copy of the webhook
            subscriptions may be (:func:`core.store.webhooks.cache_subscriptions`); entry points
            pass ``settings.webhooks.subscriptions_max_age_seconds``.
    """
    extra: dict[str, int] = {}
    if operation_timeout_ms:
        extra["timeoutMS"] = operation_timeout_ms
    cache_subscriptions(subscriptions_max_age_seconds)
    mongoengine.disconnect()
    mongoengine.connect(
        host=uri,
        connect=False,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 4, 10_000),
        tz_aware=False,
        uuidRepresentation="standard",
        **extra,
    )


def ensure_indexes() -> None:
    """Create every collection's indexes (idempotent; raises when MongoDB is unreachable).

    On FerretDB 1.x, drop them instead: FerretDB 1.24 pushes a filter down to PostgreSQL only as
    JSON containment, which the btree index it makes for a MongoDB index cannot serve (the GIN
    indexes of ``devtools.postgres`` do), and it sorts in memory. Such an index is never read,
    yet written by every insert and update (FerretDB rewrites the whole row): dropping the
    emails' ten, with GIN indexes per collection (``devtools.postgres``), cut PostgreSQL's CPU
    per delivered email by 10-20 % in the delivery benchmark. No collection has a unique index
    but ``_id``'s, so nothing else relies on them. The collections are created all the same,
    so their tables and GIN indexes exist before the first request rather than with its insert.
    """
    for document in DOCUMENTS:
        collection = document._get_collection()
        if not is_ferretdb_v1(collection.database):
            document.ensure_indexes()
            continue
        # The API and the scheduler start together: either may create or drop first.
        try:
            collection.database.create_collection(collection.name)
        except CollectionInvalid:
            pass
        except OperationFailure as exc:
            if exc.code != _NAMESPACE_EXISTS:
                raise
        for name in collection.index_information():
            if name == "_id_":
                continue
            try:
                collection.drop_index(name)
            except OperationFailure as exc:
                if exc.code != _INDEX_NOT_FOUND:
                    raise


def ensure_indexes_in_background(
    *, retry_seconds: float = 2.0, on_ready: Callable[[], None] | None = None
) -> threading.Thread:
    """Create indexes once MongoDB answers, retrying in a daemon thread.

    The API must start, and stay up, while MongoDB is down; indexes follow when it is back.

    Args:
        retry_seconds: Pause between attempts.
        on_ready: Called once the indexes exist.

    Returns:
        The started thread.
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                ensure_indexes()
            except PyMongoError as exc:
                log.warning("MongoDB not ready, indexes not created yet: %s", exc)
                stop.wait(retry_seconds)
                continue
            log.info("MongoDB indexes are in place")
            if on_ready is not None:
                on_ready()
            return

    thread = threading.Thread(target=run, name="ensure-indexes", daemon=True)
    thread.start()
    return thread
