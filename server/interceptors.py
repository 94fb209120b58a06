"""The one place where exceptions become gRPC statuses.

:class:`core.errors.MailroomError` subclasses carry their status code; validation errors add a
``google.rpc.BadRequest`` detail. Anything else is logged with its traceback and answered INTERNAL
with no internals in the message.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from core.errors import InvalidArgument, MailroomError, Unauthenticated

log = logging.getLogger(__name__)


def error_to_status(error: MailroomError) -> status_pb2.Status:
    """Build the google.rpc.Status for an API error, with field violations when there are any."""
    status = status_pb2.Status(code=error.grpc_status_code.value[0], message=error.message)
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
    return status


def _internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Turns exceptions raised by unary-unary handlers into rich gRPC statuses."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the unary-unary handler of the call, if it is one."""
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method
        deserialize = handler.request_deserializer

        def tolerant_deserializer(data: bytes) -> Any:
            # gRPC answers INTERNAL when a deserializer raises; a malformed request is the
            # caller's error: the wrapper answers INVALID_ARGUMENT for it.
            try:
                return deserialize(data) if deserialize is not None else data
            except Exception as exc:  # protobuf's DecodeError, and any other
                return _Malformed(f"{type(exc).__name__}")

        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                log.info("%s answered INVALID_ARGUMENT: malformed request (%s)", method, request)
                status = status_pb2.Status(
                    code=code_pb2.INVALID_ARGUMENT,
                    message="invalid request: the message is not a valid protobuf of its type",
                )
                context.abort_with_status(rpc_status.to_status(status))
            try:
                return inner(request, context)
            except MailroomError as exc:
                log.info("%s answered %s: %s", method, exc.grpc_status_code.name, exc.message)
                context.abort_with_status(rpc_status.to_status(error_to_status(exc)))
            except Exception:
                # abort_with_status raises an Exception subclass too; let it through.
                if context.code() is not None:  # type: ignore[attr-defined]
                    raise
                log.exception("%s failed", method)
                context.abort_with_status(rpc_status.to_status(_internal_status()))

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=tolerant_deserializer,
            response_serializer=handler.response_serializer,
        )


class _Malformed(str):
    """Stands for a request that did not deserialize (the text names the error class)."""


class ApiKeyInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Requires ``authorization: Bearer <key>`` on the calls of ``protected`` services.

    Health checks and reflection stay open so that Envoy and grpcurl work without a key.

    Args:
        keys: The accepted API keys.
        protected: Full service names (``mailroom.v1.MailService``) that need a key.
    """

    def __init__(self, keys: Iterable[str], protected: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys]
        self._prefixes = tuple(f"/{name}/" for name in protected)

    def _authorized(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        for key, value in metadata:
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer":
                    return False
                # Compare in constant time against each key, so timing says nothing.
                return any(hmac.compare_digest(token.encode(), k) for k in self._keys)
        return False

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap protected unary handlers with the key check."""
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefixes):
            return handler
        inner = handler.unary_unary

        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._authorized(context.invocation_metadata() or ()):
                raise Unauthenticated("a valid API key is required (authorization: Bearer <key>)")
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
