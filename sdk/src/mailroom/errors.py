"""The exceptions the Mailroom client raises.

Every failed call raises a subclass of :class:`MailroomError`, one class per gRPC status code,
chained (``raise ... from``) to the original :class:`grpc.RpcError`. :func:`error_from_rpc` is the
one mapping from a gRPC error to these classes.

Example:
    >>> try:
    ...     client.send_email(["not-an-address"], "Hi", "Hello")
    ... except InvalidArgument as err:
    ...     for violation in err.violations:
    ...         print(violation.field, violation.description)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from mailroom.models import Email

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "DeliveryTimeout",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "MailroomError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_class_for",
    "error_from_rpc",
    "error_from_status",
]

# The trailing metadata key that carries a serialized google.rpc.Status (the gRPC convention that
# grpcio-status implements; parsed here so the SDK need not depend on grpcio-status).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request.

    Attributes:
        field: The path of the field, e.g. ``"to[0]"`` or ``"send_at"``.
        description: What is wrong with it.
    """

    field: str
    description: str


class MailroomError(Exception):
    """Base class of every error the Mailroom client raises.

    Attributes:
        code: The gRPC status code of the failed call.
        message: The server's (or gRPC's) description of the failure.
        details: The ``google.rpc.Status`` details the server attached, as packed
            ``google.protobuf.Any`` messages; empty when there were none.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, details: Sequence[any_pb2.Any] = ()) -> None:
        """Create the error.

        Args:
            message: The description of the failure.
            details: The ``google.rpc.Status`` details of the failed call, if any.
        """
        super().__init__(message)
        self.message = message
        self.details: tuple[any_pb2.Any, ...] = tuple(details)


class Cancelled(MailroomError):
    """The call was cancelled, usually by the caller (gRPC ``CANCELLED``)."""

    code = grpc.StatusCode.CANCELLED


class Unknown(MailroomError):
    """The server failed in a way it did not classify (gRPC ``UNKNOWN``)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(MailroomError):
    """The request is invalid (gRPC ``INVALID_ARGUMENT``).

    Attributes:
        violations: The offending fields, parsed from the ``google.rpc.BadRequest`` detail the
            server attached; empty if it attached none.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, details: Sequence[any_pb2.Any] = ()) -> None:
        """Create the error and extract the field violations from its details.

        Args:
            message: The description of the failure.
            details: The ``google.rpc.Status`` details of the failed call, if any.
        """
        super().__init__(message, details=details)
        self.violations: list[FieldViolation] = _field_violations(self.details)

    def __str__(self) -> str:
        """Return the message followed by every field violation."""
        if not self.violations:
            return self.message
        listed = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        return f"{self.message} ({listed})"


class DeadlineExceeded(MailroomError):
    """The call did not complete before its deadline (gRPC ``DEADLINE_EXCEEDED``)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(MailroomError):
    """No email has the given id (gRPC ``NOT_FOUND``)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MailroomError):
    """An idempotency key was reused with a different payload (gRPC ``ALREADY_EXISTS``)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(MailroomError):
    """The call is not allowed (gRPC ``PERMISSION_DENIED``).

    E.g. a ``from`` outside the server's allowed sender domains; the message names the field.
    """

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MailroomError):
    """A quota or size limit was hit, e.g. an email too large (gRPC ``RESOURCE_EXHAUSTED``)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(MailroomError):
    """The email's state forbids the call, e.g. cancelling a sent email.

    gRPC ``FAILED_PRECONDITION``.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MailroomError):
    """The call was aborted by a concurrent change (gRPC ``ABORTED``)."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(MailroomError):
    """A value is outside its valid range (gRPC ``OUT_OF_RANGE``)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(MailroomError):
    """The server does not implement the call, e.g. it is older (gRPC ``UNIMPLEMENTED``)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MailroomError):
    """The server failed, e.g. its database was unreachable (gRPC ``INTERNAL``)."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(MailroomError):
    """The server could not be reached, even after the client's retries (gRPC ``UNAVAILABLE``)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(MailroomError):
    """Unrecoverable data loss or corruption (gRPC ``DATA_LOSS``)."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(MailroomError):
    """The API key is missing or wrong (gRPC ``UNAUTHENTICATED``)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeliveryTimeout(MailroomError):
    """The email did not reach a final status before ``wait_for_delivery`` gave up.

    This is not a failed call: the email may still be delivered later.

    Attributes:
        email_id: The id of the email waited for.
        timeout: How long the client waited, in seconds.
        email: The email as last seen, or ``None`` if it was never fetched.
    """

    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, email_id: str, timeout: float, email: Email | None) -> None:
        """Create the error.

        Args:
            email_id: The id of the email waited for.
            timeout: How long the client waited, in seconds.
            email: The email as last seen, or ``None`` if it was never fetched.
        """
        status = email.status.name if email is not None else "unknown"
        super().__init__(
            f"email {email_id} not delivered within {timeout:g}s (last status: {status})"
        )
        self.email_id = email_id
        self.timeout = timeout
        self.email = email


_ERRORS: dict[grpc.StatusCode, type[MailroomError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class_for(code: grpc.StatusCode) -> type[MailroomError]:
    """Return the exception class for a gRPC status code.

    Args:
        code: A gRPC status code other than ``OK``.

    Returns:
        The :class:`MailroomError` subclass raised for that code; :class:`Unknown` for a code
        this version of the SDK does not know.
    """
    return _ERRORS.get(code, Unknown)


def error_from_rpc(error: grpc.RpcError) -> MailroomError:
    """Convert a failed gRPC call (sync or asyncio) into the matching :class:`MailroomError`.

    The ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailing metadata, if any,
    supplies the details (and for :class:`InvalidArgument`, the field violations).

    Args:
        error: The error a gRPC stub raised; a ``grpc.Call`` or ``grpc.aio.AioRpcError``.

    Returns:
        The exception to raise, ``from error``.
    """
    code = _call_attr(error, "code")
    message = _call_attr(error, "details")
    trailing = _call_attr(error, "trailing_metadata")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    if not isinstance(message, str) or not message:
        message = code.name
    details = _status_details(trailing)
    return error_class_for(code)(message, details=details)


# gRPC's status codes by number, as a google.rpc.Status carries them.
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_from_status(status: status_pb2.Status) -> MailroomError:
    """Convert a ``google.rpc.Status`` carried in a response into the matching error.

    ``send_email_batch`` reports why each refused email was refused this way, inside a
    successful call, so the error is not raised and chains to no ``grpc.RpcError``.

    Args:
        status: The status, e.g. ``SendEmailBatchResult.error``.

    Returns:
        The :class:`MailroomError` subclass for its code (:class:`Unknown` for ``OK`` or a code
        this SDK does not know), with its message and details (and for
        :class:`InvalidArgument`, the field violations).
    """
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        code = grpc.StatusCode.UNKNOWN
    return error_class_for(code)(status.message or code.name, details=status.details)


def _call_attr(error: grpc.RpcError, name: str) -> Any:
    """Call ``error.<name>()`` if the error is a call that has it, else ``None``."""
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _status_details(trailing: Iterable[tuple[str, Any]] | None) -> list[any_pb2.Any]:
    """Return the details of the ``google.rpc.Status`` in the trailing metadata, if any."""
    for key, value in trailing or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            return list(status_pb2.Status.FromString(value).details)
        except DecodeError:
            # A malformed detail must not hide the status the caller is about to see.
            return []
    return []


def _field_violations(details: Iterable[any_pb2.Any]) -> list[FieldViolation]:
    """Return the field violations of every ``google.rpc.BadRequest`` among the details."""
    violations: list[FieldViolation] = []
    for detail in details:
        if not detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            continue
        bad_request = error_details_pb2.BadRequest()
        try:
            detail.Unpack(bad_request)
        except DecodeError:
            continue
        violations.extend(
            FieldViolation(field=v.field, description=v.description)
            for v in bad_request.field_violations
        )
    return violations
