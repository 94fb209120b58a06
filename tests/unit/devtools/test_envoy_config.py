"""The Envoy config: rendered for free ports, and accepted by the Envoy binary (no network).

``envoy --mode validate`` loads the whole config, including the transcoder's descriptor set and
the Lua source, without binding any socket.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from devtools import envoy_config
from devtools.envoy_config import (
    ENVOY_YAML,
    REPO_ROOT,
    envoy_binary,
    envoy_command,
    render_envoy_config,
    write_envoy_config,
)

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def _validate(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _transcoder(config: dict[str, Any]) -> dict[str, Any]:
    (transcoder,) = [f for f in _hcm(config)["http_filters"] if f["name"] == TRANSCODER]
    typed: dict[str, Any] = transcoder["typed_config"]
    return typed


def test_rendered_config_has_the_requested_ports_upstream_and_descriptor() -> None:
    descriptor = Path(envoy_config.DESCRIPTOR)
    text = render_envoy_config(
        listen_port=18080,
        admin_port=19901,
        api_host="127.0.0.2",
        api_port=50099,
        descriptor_path=descriptor,
        listen_address="127.0.0.1",
    )
    config = yaml.safe_load(text)

    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    (cluster,) = config["static_resources"]["clusters"]
    upstreams = [
        e["endpoint"]["address"]["socket_address"]
        for locality in cluster["load_assignment"]["endpoints"]
        for e in locality["lb_endpoints"]
    ]
    assert upstreams == [{"address": "127.0.0.2", "port_value": 50099}]
    transcoder = _transcoder(config)
    assert transcoder["proto_descriptor"] == str(descriptor.resolve())
    assert Path(transcoder["proto_descriptor"]).is_absolute()
    # The rest is the committed config, untouched.
    assert "mailroom.v1.MailService" in transcoder["services"]
    assert transcoder["convert_grpc_status"] is True


def test_rendering_keeps_the_listen_address_unless_asked_and_leaves_the_file_alone() -> None:
    before = ENVOY_YAML.read_text(encoding="utf-8")
    config = yaml.safe_load(
        render_envoy_config(listen_port=1, admin_port=2, api_port=3, descriptor_path=Path("x.pb"))
    )
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"
    assert ENVOY_YAML.read_text(encoding="utf-8") == before


def test_envoy_accepts_the_rendered_config_from_any_directory(tmp_path: Path) -> None:
    path = write_envoy_config(
        tmp_path / "envoy.yaml",
        listen_port=18080,
        admin_port=19901,
        api_port=50051,
        descriptor_path=Path(envoy_config.DESCRIPTOR),
        listen_address="127.0.0.1",
    )
    assert path == tmp_path / "envoy.yaml"

    result = _validate(path, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_envoy_accepts_the_committed_config_from_the_repo_root() -> None:
    # What docker-compose and `envoy -c envoy/envoy.yaml` run: the descriptor path is relative.
    result = _validate(ENVOY_YAML, cwd=REPO_ROOT)

    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_command_runs_the_found_binary_without_hot_restart(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"

    argv = envoy_command(config)

    assert argv[0] == envoy_binary()
    assert Path(argv[0]).is_file()
    assert argv[1:3] == ["-c", str(config)]
    # Two Envoys on one host (make dev and a test run) share hot-restart base id 0 otherwise.
    assert "--disable-hot-restart" in argv


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = _hcm(config)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def test_rendered_docs_routes_serve_existing_files_by_absolute_path() -> None:
    config = yaml.safe_load(render_envoy_config(listen_port=1, admin_port=2, api_port=3))
    served = {
        route["match"].get("path") or route["match"]["safe_regex"]["regex"]: route
        for route in _routes(config)
        if "direct_response" in route
    }

    assert set(served) == {
        "/openapi.yaml",
        "/docs/?",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
    }
    for route in served.values():
        path = Path(route["direct_response"]["body"]["filename"])
        assert path.is_absolute() and path.is_file(), path
        size_cap = _hcm(config)["route_config"]["max_direct_response_body_size_bytes"]
        assert path.stat().st_size <= size_cap, path
        # Else the transcoder's reject_unknown_method answers 404 before the route is taken.
        assert route["typed_per_filter_config"][TRANSCODER]["disabled"] is True


def test_responses_use_the_json_names_requests_take() -> None:
    transcoder = _transcoder(yaml.safe_load(ENVOY_YAML.read_text(encoding="utf-8")))

    assert transcoder["print_options"]["preserve_proto_field_names"] is False
    assert transcoder["print_options"].get("always_print_enums_as_ints", False) is False


def test_rendered_lua_package_paths_find_the_request_fields_modules() -> None:
    config = yaml.safe_load(render_envoy_config(listen_port=1, admin_port=2, api_port=3))
    (fields_filter,) = [
        f for f in _hcm(config)["http_filters"] if "package_paths" in f["typed_config"]
    ]

    paths = fields_filter["typed_config"]["package_paths"]

    for module in ("request_fields", "request_schema"):
        found = [
            Path(p.replace("?", module)) for p in paths if Path(p.replace("?", module)).is_file()
        ]
        assert found and found[0].is_absolute(), (module, paths)
