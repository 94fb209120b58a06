"""The generated table of known REST body fields that Envoy's Lua filter checks against."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))

import request_schema  # noqa: E402


def rendered() -> str:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString((ROOT / "envoy/mailroom.binpb").read_bytes())
    return request_schema.render(files, "mailroom.v1")


def message_block(text: str, name: str) -> str:
    match = re.search(rf'\["\.mailroom\.v1\.{name}"\] = \{{\n(.*?)\n    \}},', text, re.S)
    assert match, name
    return match.group(1)


def test_every_route_with_a_body_is_listed_with_its_request_message():
    text = rendered()

    routes = re.findall(r'method = "(\w+)", path = "([^"]+)", message = "([^"]+)"', text)

    assert ("POST", "^/api/email$", ".mailroom.v1.SendEmailRequest") in routes
    assert ("POST", "^/api/emails:batch$", ".mailroom.v1.SendEmailBatchRequest") in routes
    assert ("POST", "^/api/email/[^/]+:cancel$", ".mailroom.v1.CancelEmailRequest") in routes
    assert not [r for r in routes if r[0] == "GET"]  # query parameters are the transcoder's


def test_fields_are_known_by_json_and_proto_names_with_nested_messages_and_maps():
    send = message_block(rendered(), "SendEmailRequest")

    for name in ("from", "from_address", "replyTo", "reply_to", "sendAt", "send_at"):
        assert f'["{name}"] = {{message = "", map = false}}' in send
    assert '["attachments"] = {message = ".mailroom.v1.Attachment", map = false}' in send
    assert '["metadata"] = {message = "", map = true}' in send
    assert "reply_too" not in send
    assert '["contentId"]' in message_block(rendered(), "Attachment")


def test_the_committed_table_is_the_rendered_one():
    committed = (ROOT / "envoy/lua/request_schema.lua").read_text(encoding="utf-8")
    assert committed == rendered()


def test_path_patterns_escape_lua_magic_characters():
    assert request_schema._path_pattern("/api/v1.0/{id}:do-it") == "^/api/v1%.0/[^/]+:do%-it$"


def _service_file(body: str, body_type: str) -> descriptor_pb2.FileDescriptorSet:
    """A one-method service whose HTTP rule puts ``body`` (a field of type ``body_type``)."""
    files = descriptor_pb2.FileDescriptorSet()
    file = files.file.add(name="t.proto", package="t")
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="kind", number=1, type=9, label=1, json_name="kind")
    request = file.message_type.add(name="Req")
    request.field.add(name="provider", number=1, type=9, label=1, json_name="provider")
    request.field.add(
        name="payload", number=2, type=11, label=1, type_name=body_type, json_name="payload"
    )
    method = file.service.add(name="S").method.add(
        name="M", input_type=".t.Req", output_type=".t.Req"
    )
    rule = method.options.Extensions[annotations_pb2.http]
    rule.post = "/api/things/{provider}"
    rule.body = body
    return files


def test_a_raw_http_body_is_not_checked_but_a_body_field_message_is():
    raw = request_schema.render(_service_file("payload", ".google.api.HttpBody"), "t")
    assert "method =" not in raw

    nested = request_schema.render(_service_file("payload", ".t.Inner"), "t")
    assert 'message = ".t.Inner"}' in nested
    assert '["kind"]' in nested
    assert '["provider"]' not in nested  # a path parameter, not a body field
