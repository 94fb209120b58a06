"""Errors the API answers with. Each class carries its gRPC status code.

One interceptor (:mod:`server.interceptors`) turns them into a gRPC status with details; Envoy turns
that into the HTTP status and a JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: its path (``to[0]``) and what is wrong with it."""

    field: str
    description: str


class MailroomError(Exception):
    """Base of the errors the API answers with."""

    grpc_status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MailroomError):
    """The request is invalid; ``violations`` name the fields."""

    grpc_status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}")
        self.violations = violations


class Unauthenticated(MailroomError):
    """The call carries no API key, or an unknown one."""

    grpc_status_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MailroomError):
    """The caller may not do this, e.g. send from a domain outside ``allowed_from_domains``.

    The message starts with the refused field (``from: ...``); Envoy answers HTTP 403.
    """

    grpc_status_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(MailroomError):
    """No such email."""

    grpc_status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MailroomError):
    """An idempotency key was reused with a different payload."""

    grpc_status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MailroomError):
    """The email is not in a state that allows the operation."""

    grpc_status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MailroomError):
    """Another request changed the email at the same moment; retrying is safe (HTTP 409)."""

    grpc_status_code = grpc.StatusCode.ABORTED


class StorageUnavailable(MailroomError):
    """MongoDB could not be reached or refused the write: nothing was written."""

    grpc_status_code = grpc.StatusCode.INTERNAL


class StorageOutcomeUnknown(StorageUnavailable):
    """A write was sent but its outcome is unknown (timeout, connection reset): it may land."""


class DuplicateKey(MailroomError):
    """An insert met an existing ``_id`` (or unique key). Never answered to a client as is."""

    grpc_status_code = grpc.StatusCode.INTERNAL


class NotAccepted(MailroomError):
    """The store did not confirm the email in time; it will not be sent unless a retry claims it.

    A retry with the same idempotency key is safe: it returns the same email or stores it anew.
    """

    grpc_status_code = grpc.StatusCode.UNAVAILABLE


class QueueUnavailable(MailroomError):
    """Redis could not be reached. The API logs it and still answers success."""

    grpc_status_code = grpc.StatusCode.UNAVAILABLE
