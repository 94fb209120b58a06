"""The one place where MongoDB driver and ODM exceptions become Mailroom's errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mongoengine.errors import MongoEngineException, NotUniqueError
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from core.errors import DuplicateKey, MailroomError, StorageOutcomeUnknown, StorageUnavailable

log = logging.getLogger(__name__)


def _translate(exc: Exception) -> MailroomError:
    """The Mailroom error for a driver or ODM exception (the only place that decides it)."""
    kind = type(exc).__name__
    if isinstance(exc, DuplicateKeyError) or (
        isinstance(exc, NotUniqueError) and "duplicate key" in str(exc).lower()
    ):
        return DuplicateKey(f"duplicate key: {kind}")
    if isinstance(exc, ServerSelectionTimeoutError):
        # No server was selected, so nothing was sent: the write certainly did not happen.
        return StorageUnavailable(f"storage unavailable ({kind})")
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError) or (
        isinstance(exc, PyMongoError) and exc.timeout
    ):
        # Sent, then the connection broke or the deadline passed: the server may still apply it.
        return StorageOutcomeUnknown(f"storage did not answer in time ({kind})")
    return StorageUnavailable(f"storage unavailable ({kind})")


@contextmanager
def map_mongo_errors() -> Iterator[None]:
    """Translate MongoDB driver and ODM errors into Mailroom's storage errors.

    Raises:
        DuplicateKey: An insert met an existing ``_id``.
        StorageOutcomeUnknown: A write may or may not have been applied (timeout, reset).
        StorageUnavailable: MongoDB is unreachable or refused the operation.
    """
    try:
        yield
    except (PyMongoError, MongoEngineException) as exc:
        error = _translate(exc)
        # Details (addresses, server messages) go to the log, never into an answer.
        log.warning("%s: %s: %s", error.message, type(exc).__name__, exc)
        raise error from exc
