"""Mailroom's own processes for the integration tests (imported by conftest and tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.services import ManagedProcess
from helpers import free_port

BIN = Path(sys.executable).parent


def grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class ApiProcess(ManagedProcess):
    """The ``mailroom-api`` process; ``.target`` is its gRPC address."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        super().__init__(
            "api",
            [str(BIN / "mailroom-api")],
            log_path=log_path,
            ready=lambda: grpc_serving(self.target),
            ready_timeout=30,
            url=self.target,
            env={**env, "MAILROOM_GRPC_HOST": "127.0.0.1", "MAILROOM_GRPC_PORT": str(self.port)},
        )
