"""``mailroom-api``: the gRPC server with health checking and reflection."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.logs import configure_logging
from core.queue import DeliveryQueue
from core.settings import Settings, get_settings
from core.store.connection import connect, ensure_indexes_in_background
from server import suppression_snapshot
from server.health import HealthPoolInterceptor, StoreMonitor
from server.interceptors import ApiKeyInterceptor, ErrorInterceptor
from server.provider_events.metrics import serve_metrics
from server.registry import SERVICES, close_servicer
from server.supervisor import supervise
from server.suppression_snapshot import SuppressionSnapshot

log = logging.getLogger("server")

#: The full names of the API's services (server.registry), as reflection and health list them.
SERVICE_NAMES = [service.full_name for service in SERVICES]


def build_server(
    settings: Settings, queue: DeliveryQueue, *, reuse_port: bool = False
) -> tuple[grpc.Server, int, health.HealthServicer, list[object]]:
    """Build the gRPC server (not started) and bind its port.

    Args:
        settings: The process settings.
        queue: Where delivery messages go.
        reuse_port: Share the port with sibling servers (``SO_REUSEPORT``). Off otherwise, so a
            second API started by mistake on a busy port fails instead of splitting traffic.

    Returns:
        The server, the bound port (useful with port 0), its health servicer and the servicers
        of :data:`server.registry.SERVICES` (whose background work stops with the server).
    """
    # Outermost first: health runs on its own threads, then errors are mapped around the rest.
    health_pool = HealthPoolInterceptor()
    interceptors: list[grpc.ServerInterceptor] = [health_pool, ErrorInterceptor()]  # type: ignore[type-arg]
    if settings.api_keys:
        keys = [k.get_secret_value() for k in settings.api_keys]
        protected = [service.full_name for service in SERVICES if service.protected]
        interceptors.append(ApiKeyInterceptor(keys, protected))
    max_message = max(settings.grpc_max_message_bytes, settings.max_email_bytes * 2)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.grpc_max_workers, thread_name_prefix="grpc"
        ),
        # The error interceptor is outermost, so it also answers for the key check.
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    servicers: list[object] = []
    for service in SERVICES:
        servicer = service.build(settings, queue)
        service.register(servicer, server)
        servicers.append(servicer)
    health_servicer = health.HealthServicer()
    for name in ["", *SERVICE_NAMES]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio's "Failed to bind", with no reason given
        raise SystemExit(f"cannot bind {address}: the port is in use or not available") from exc
    return server, port, health_servicer, servicers


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run one API server until SIGINT or SIGTERM, then drain in-flight requests."""
    connect(
        settings.mongodb_uri,
        timeout_ms=settings.mongodb_timeout_ms,
        operation_timeout_ms=settings.mongodb_timeout_ms + 1000,
        subscriptions_max_age_seconds=settings.webhooks.subscriptions_max_age_seconds,
    )
    ensure_indexes_in_background()
    queue = DeliveryQueue(
        settings.redis_url, settings.queue_name, timeout_seconds=settings.redis_timeout_seconds
    )
    server, port, health_servicer, servicers = build_server(settings, queue, reuse_port=reuse_port)
    monitor = StoreMonitor(health_servicer, ["", *SERVICE_NAMES]).start()
    snapshot = None
    if settings.suppression_snapshot_poll_seconds:
        snapshot = SuppressionSnapshot(
            poll_seconds=settings.suppression_snapshot_poll_seconds,
            reload_seconds=settings.suppression_snapshot_reload_seconds,
        ).start()
        suppression_snapshot.install(snapshot)
    server.start()
    log.info("mailroom-api listening on %s:%d", settings.grpc_host, port)
    serve_metrics(settings.api_metrics_port)

    stopped = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: draining requests", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    # Envoy's health check takes us out of rotation while in-flight requests finish.
    monitor.stop()
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    for servicer in servicers:
        close_servicer(servicer)
    if snapshot is not None:
        suppression_snapshot.install(None)
        snapshot.stop()
    queue.close()
    log.info("mailroom-api stopped")


def main() -> None:
    """Run the API (one server, or ``MAILROOM_API_PROCESSES`` on one port) until stopped."""
    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.api_processes <= 1:
        serve(settings)
        return
    if settings.grpc_port == 0:
        raise SystemExit("MAILROOM_API_PROCESSES > 1 needs a fixed MAILROOM_GRPC_PORT, not 0")
    raise SystemExit(
        supervise(settings.api_processes, functools.partial(serve, settings, reuse_port=True))
    )


if __name__ == "__main__":
    main()
