"""Health answers while request threads are busy; NOT_SERVING only while the store is down."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from helpers import free_port, wait_until
from server.health import HealthPoolInterceptor

BLOCKED = "/test.Slow/Call"


class SlowService(grpc.GenericRpcHandler):
    """A method that holds its request thread until released (a send stuck on the store)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.lock = threading.Lock()

    def service(self, handler_call_details):
        if handler_call_details.method != BLOCKED:
            return None

        def call(request, context):
            with self.lock:
                self.running += 1
            self.release.wait(30)
            return request

        return grpc.unary_unary_rpc_method_handler(call)


def test_health_answers_while_every_request_thread_is_held() -> None:
    slow = SlowService()
    server = grpc.server(
        futures.ThreadPoolExecutor(2), handlers=[slow], interceptors=[HealthPoolInterceptor()]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(BLOCKED)
            pending = [call.future(b"x", timeout=60) for _ in range(6)]
            wait_until(lambda: slow.running == 2, timeout=10, message="both threads held")
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=20
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Answered while the request pool was still full and four calls still waited.
            assert slow.running == 2
            assert not any(f.done() for f in pending)
            slow.release.set()
            assert [f.result() for f in pending] == [b"x"] * 6
    finally:
        slow.release.set()
        server.stop(0)


def check(api) -> int:
    with grpc.insecure_channel(api.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


@pytest.mark.skipif(
    "MAILROOM_TEST_MONGODB_URI" in __import__("os").environ,
    reason="the external MongoDB cannot be stopped by the tests",
)
def test_api_is_not_serving_while_the_store_is_down_and_serving_again_after(
    api, mongo_server
) -> None:
    assert check(api) == health_pb2.HealthCheckResponse.SERVING
    mongo_server.stop()
    wait_until(
        lambda: check(api) == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=60,
        message="NOT_SERVING while the store is down",
    )
    mongo_server.start()
    wait_until(
        lambda: check(api) == health_pb2.HealthCheckResponse.SERVING,
        timeout=60,
        message="SERVING once the store is back",
    )
