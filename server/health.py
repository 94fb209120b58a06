"""Health that answers while request threads are busy, and reports the store's real state.

Two parts:

* :class:`HealthPoolInterceptor` runs ``grpc.health.v1.Health`` calls on threads of their own, so
  a MailService backlog (say, sixteen sends waiting on a stalled store with eight request threads)
  never makes Envoy's health check time out and take a live API out of rotation.
* :class:`StoreMonitor` pings MongoDB every few seconds and sets NOT_SERVING only after several
  pings in a row failed: when storage is really down, not when one call was slow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import pymongo
from grpc_health.v1 import health, health_pb2

from core.errors import StorageUnavailable
from core.store.mapping import map_mongo_errors

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class HealthPoolInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Runs ``grpc.health.v1.Health`` calls on a small thread pool of their own.

    grpcio runs a handler on the pool named by its behaviour's ``experimental_thread_pool``
    attribute instead of the server's; this interceptor, outermost, sets it on health handlers.

    Args:
        workers: Threads for health checks (``Watch`` streams hold one each).
    """

    def __init__(self, workers: int = 4) -> None:
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Give health handlers the health pool; leave every other handler alone."""
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._on_pool(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._on_pool(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _on_pool(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            return behavior(request, context)

        run.experimental_thread_pool = self.pool  # type: ignore[attr-defined]
        return run

    def shutdown(self) -> None:
        """Stop the health pool's threads."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def ping_store(timeout: float) -> None:
    """Run MongoDB's ``ping`` within ``timeout`` seconds.

    Raises:
        StorageUnavailable: It did not answer.
    """
    from core.store.documents import Email

    with map_mongo_errors(), pymongo.timeout(timeout):
        Email._get_db().command("ping")


class StoreMonitor:
    """Keeps the health status in step with the store: NOT_SERVING after ``failures`` pings fail.

    Args:
        servicer: The health servicer to update.
        services: The service names whose status it sets.
        interval: Seconds between pings.
        failures: Consecutive failed pings that mean "down".
        ping: Checks the store; raises :class:`StorageUnavailable` when it does not answer.
    """

    def __init__(
        self,
        servicer: health.HealthServicer,
        services: list[str],
        *,
        interval: float = 2.0,
        failures: int = 3,
        ping: Callable[[float], None] = ping_store,
    ) -> None:
        self._servicer = servicer
        self._services = services
        self._interval = interval
        self._failures = failures
        self._ping = ping
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-monitor", daemon=True)

    def start(self) -> StoreMonitor:
        """Start pinging in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pinging (before the server's graceful shutdown sets its own status)."""
        self._stop.set()
        self._thread.join(self._interval * 2)

    def _set(self, status: int) -> None:
        for name in self._services:
            self._servicer.set(name, status)

    def _run(self) -> None:
        failed = 0
        serving = True
        while not self._stop.wait(self._interval):
            try:
                self._ping(self._interval)
            except StorageUnavailable as exc:
                failed += 1
                if serving and failed >= self._failures:
                    log.error("store down (%d pings failed: %s): NOT_SERVING", failed, exc.message)
                    self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
                    serving = False
                continue
            failed = 0
            if not serving and not self._stop.is_set():
                log.info("store answers again: SERVING")
                self._set(health_pb2.HealthCheckResponse.SERVING)
                serving = True
