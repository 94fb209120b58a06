"""Every service of proto/mailroom/v1/ is served: by the API (server.registry) and by Envoy.

The descriptor set ``make proto`` writes is the reference: a .proto file with a new service that
is not registered in ``server/registry.py``, or not listed by Envoy's transcoder in
``envoy/envoy.yaml``, fails here.
"""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from devtools.envoy_config import DESCRIPTOR, ENVOY_YAML
from server.main import SERVICE_NAMES, build_server
from server.registry import SERVICES

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def _descriptor_services() -> set[str]:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(DESCRIPTOR.read_bytes())
    return {
        f"{file.package}.{service.name}"
        for file in files.file
        if file.package == "mailroom.v1"
        for service in file.service
    }


def _transcoder_services() -> list[str]:
    config: Any = yaml.safe_load(ENVOY_YAML.read_text(encoding="utf-8"))
    found: list[str] = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    if http_filter["name"] == TRANSCODER:
                        found.extend(http_filter["typed_config"]["services"])
    return found


def test_the_descriptor_has_more_than_one_service() -> None:
    assert {"mailroom.v1.MailService", "mailroom.v1.SuppressionService"} <= _descriptor_services()


def test_envoy_transcodes_every_service_of_the_descriptor() -> None:
    services = _transcoder_services()
    assert sorted(services) == sorted(_descriptor_services())
    assert len(services) == len(set(services))


def test_the_api_registers_every_service_of_the_descriptor() -> None:
    assert sorted(SERVICE_NAMES) == sorted(_descriptor_services())
    assert len({s.full_name for s in SERVICES}) == len(SERVICES)


def test_the_built_server_serves_health_for_every_service(settings: Any) -> None:
    from grpc_health.v1 import health_pb2

    settings.grpc_port = 0
    settings.grpc_host = "127.0.0.1"
    server, _port, health_servicer, servicers = build_server(settings, queue=None)  # type: ignore[arg-type]
    try:
        assert len(servicers) == len(SERVICES)
        for name in SERVICE_NAMES:
            request = health_pb2.HealthCheckRequest(service=name)
            reply = health_servicer.Check(request, None)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)
        for servicer in servicers:
            getattr(servicer, "close", lambda: None)()


def test_the_rest_reference_documents_the_201_answers() -> None:
    document: Any = yaml.safe_load((ENVOY_YAML.parent / "openapi.yaml").read_text("utf-8"))
    add = document["paths"]["/api/suppressions"]["post"]["responses"]
    assert list(add)[:2] == ["201", "200"]
    assert "200" not in document["paths"]["/api/email"]["post"]["responses"]
    assert "201" in document["paths"]["/api/email"]["post"]["responses"]
