"""Every foreign exception is translated at its boundary; every API error has a gRPC status."""

import grpc
import pymongo.errors
import pytest
import redis
from google.rpc import error_details_pb2, status_pb2
from mongoengine.errors import OperationError

from core import errors
from core.errors import FieldViolation, InvalidArgument, MailroomError
from core.redis_errors import map_redis_errors
from core.store.mapping import map_mongo_errors
from server.interceptors import ErrorInterceptor


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_every_api_error_carries_a_specific_status():
    classes = list(all_subclasses(MailroomError))
    assert len(classes) >= 6
    for cls in classes:
        assert cls.grpc_status_code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN), cls


@pytest.mark.parametrize(
    "exc",
    [
        pymongo.errors.ServerSelectionTimeoutError("no servers"),
        pymongo.errors.AutoReconnect("reset"),
        pymongo.errors.NetworkTimeout("timeout"),
        pymongo.errors.OperationFailure("denied"),
        pymongo.errors.WriteError("bad write"),
        OperationError("could not save"),
    ],
)
def test_mongo_errors_are_mapped(exc):
    with pytest.raises(errors.StorageUnavailable) as info, map_mongo_errors():
        raise exc
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        redis.ResponseError("x"),
        OSError("down"),
    ],
)
def test_redis_errors_are_mapped(exc):
    with pytest.raises(errors.QueueUnavailable), map_redis_errors():
        raise exc


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self):
        self.status = None

    def abort_with_status(self, status):
        self.status = status
        raise Aborted

    def code(self):
        return None if self.status is None else self.status.code


def call_through_interceptor(raise_exc):
    def handler(request, context):
        raise raise_exc

    method_handler = grpc.unary_unary_rpc_method_handler(handler)
    details = type("Details", (), {"method": "/mailroom.v1.MailService/SendEmail"})()
    wrapped = ErrorInterceptor().intercept_service(lambda _d: method_handler, details)
    context = FakeContext()
    with pytest.raises(Aborted):
        wrapped.unary_unary(None, context)
    return context.status


def test_invalid_argument_carries_field_violations():
    status = call_through_interceptor(InvalidArgument([FieldViolation("to[0]", "not valid")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    rich = next(v for k, v in status.trailing_metadata if k == "grpc-status-details-bin")
    detail = status_pb2.Status.FromString(rich).details[0]
    bad_request = error_details_pb2.BadRequest()
    detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("to[0]", "not valid")
    ]


@pytest.mark.parametrize("cls", list(all_subclasses(MailroomError)))
def test_each_api_error_becomes_its_status(cls):
    exc = cls([FieldViolation("f", "d")]) if cls is InvalidArgument else cls("message")
    assert call_through_interceptor(exc).code == cls.grpc_status_code


def test_unexpected_exception_is_internal_without_internals():
    status = call_through_interceptor(KeyError("secret internals"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
