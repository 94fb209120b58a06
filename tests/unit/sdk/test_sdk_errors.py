"""The SDK's error mapping: one class per gRPC status, details parsed from trailing metadata."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import mailroom
from mailroom import errors


class FakeCall(grpc.RpcError):
    """What a sync stub raises: an RpcError that is also a grpc.Call."""

    def __init__(self, code, details="", trailing=()):
        super().__init__()
        self._code = code
        self._details = details
        self._trailing = None if trailing is None else tuple(trailing)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def _status_bin(code: grpc.StatusCode, message: str, *details) -> bytes:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status.SerializeToString()


def _bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )


ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
def test_every_error_code_maps_to_its_own_class(code):
    cls = errors.error_class_for(code)
    assert issubclass(cls, mailroom.MailroomError)
    assert cls.code is code
    err = errors.error_from_rpc(FakeCall(code, "boom"))
    assert type(err) is cls
    assert err.code is code
    assert err.message == "boom"


def test_classes_are_distinct_and_exported():
    classes = [errors.error_class_for(code) for code in ERROR_CODES]
    assert len(set(classes)) == len(ERROR_CODES)
    for cls in classes:
        assert getattr(mailroom, cls.__name__) is cls


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT),
        ("NotFound", grpc.StatusCode.NOT_FOUND),
        ("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS),
        ("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("Unavailable", grpc.StatusCode.UNAVAILABLE),
        ("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
        ("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED),
        ("DeadlineExceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("Internal", grpc.StatusCode.INTERNAL),
    ],
)
def test_the_classes_named_in_the_issue(name, code):
    assert errors.error_class_for(code) is getattr(mailroom, name)


def test_invalid_argument_carries_field_violations_from_trailing_metadata():
    details = _status_bin(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request",
        error_details_pb2.ErrorInfo(reason="IGNORED_BY_VIOLATIONS"),
        _bad_request(("to[0]", "not an email address"), ("title", "must not be empty")),
    )
    call = FakeCall(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request",
        [("some-other-key", "x"), (errors.STATUS_DETAILS_KEY, details)],
    )
    err = errors.error_from_rpc(call)
    assert isinstance(err, mailroom.InvalidArgument)
    assert err.violations == [
        mailroom.FieldViolation("to[0]", "not an email address"),
        mailroom.FieldViolation("title", "must not be empty"),
    ]
    assert len(err.details) == 2  # every detail is kept, not only the BadRequest
    assert "to[0]: not an email address" in str(err)


def test_malformed_status_details_still_give_the_right_class():
    call = FakeCall(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", [(errors.STATUS_DETAILS_KEY, b"\xff\xffnot")]
    )
    err = errors.error_from_rpc(call)
    assert isinstance(err, mailroom.InvalidArgument)
    assert err.violations == []
    assert str(err) == "bad"


def test_invalid_argument_without_details_has_no_violations():
    err = errors.error_from_rpc(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad", None))
    assert isinstance(err, mailroom.InvalidArgument)
    assert err.violations == []


def test_an_rpc_error_that_is_not_a_call_is_unknown():
    err = errors.error_from_rpc(grpc.RpcError())
    assert type(err) is mailroom.Unknown
    assert err.code is grpc.StatusCode.UNKNOWN
    assert err.message == "UNKNOWN"


def test_delivery_timeout_is_a_mailroom_error_and_not_a_failed_call():
    err = mailroom.DeliveryTimeout("abc", 5.0, None)
    assert isinstance(err, mailroom.MailroomError)
    assert not isinstance(err, mailroom.DeadlineExceeded)
    assert err.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "abc" in str(err)
