"""Render the Lua table of the JSON field names each REST request body may carry.

Envoy's gRPC-JSON transcoder drops unknown JSON fields silently, and Envoy 1.40 has no setting
to refuse them (envoyproxy/envoy#46623). ``envoy/lua/request_fields.lua`` refuses them before
the transcoder runs, with this table: for every HTTP rule with a body, its method, a Lua pattern
of its path and its request message; for every message reachable from those, its field names as
the transcoder accepts them (the JSON name and the proto name) and the message type of each
nested field. Made by ``scripts/gen_proto.py`` from the descriptor set it writes for Envoy.
"""

from __future__ import annotations

import re

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

#: Messages whose JSON form is not an object of their fields (or not checked field by field).
OPAQUE = frozenset(
    {
        ".google.protobuf.Timestamp",
        ".google.protobuf.Duration",
        ".google.protobuf.FieldMask",
        ".google.protobuf.Struct",
        ".google.protobuf.Value",
        ".google.protobuf.ListValue",
        ".google.protobuf.Any",
        ".google.protobuf.Empty",
        ".google.api.HttpBody",
    }
)
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            walk(name, nested)

    for file in files.file:
        for message in file.message_type:
            walk(f".{file.package}" if file.package else "", message)
    return found


def _body_type(
    messages: dict[str, descriptor_pb2.DescriptorProto], input_type: str, body: str
) -> str | None:
    """The message type an HTTP rule's body decodes to, or None when it is not a message.

    ``body: "*"`` is the whole request message; ``body: "field"`` is that field's type.
    """
    if body == "*":
        return input_type
    for field in messages[input_type].field:
        if field.name == body:
            return field.type_name if field.type == _MESSAGE else None
    raise ValueError(f"HTTP rule body {body!r} is not a field of {input_type}")


def _path_pattern(template: str) -> str:
    """A Lua pattern matching an HTTP rule's path template, e.g. ``/api/email/{id}:cancel``."""
    parts = re.split(r"(\{[^}]*\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            out.append("[^/]+")
        else:
            out.append(re.sub(r"([%^$().\[\]*+\-?])", r"%\1", part))
    return "^" + "".join(out) + "$"


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(files: descriptor_pb2.FileDescriptorSet, package: str) -> str:
    """Return the Lua module for the HTTP rules with a body of every service in ``package``."""
    messages = _messages(files)
    routes: list[tuple[str, str, str]] = []
    for file in files.file:
        if file.package != package:
            continue
        for service in file.service:
            for method in service.method:
                rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    if kind is None or not binding.body or kind == "custom":
                        continue
                    body_type = _body_type(messages, method.input_type, binding.body)
                    if body_type is None or body_type in OPAQUE:
                        continue  # e.g. google.api.HttpBody: raw bytes, no fields to check
                    template = getattr(binding, kind)
                    routes.append((kind.upper(), _path_pattern(template), body_type))
    wanted = sorted({input_type for _, _, input_type in routes})
    seen: dict[str, dict[str, tuple[str, bool]]] = {}
    while wanted:
        name = wanted.pop()
        if name in seen or name in OPAQUE:
            continue
        fields: dict[str, tuple[str, bool]] = {}
        for field in messages[name].field:
            nested, is_map = "", False
            if field.type == _MESSAGE and field.type_name not in OPAQUE:
                entry = messages[field.type_name]
                if entry.options.map_entry:
                    is_map = True
                    value = entry.field[1]
                    if value.type == _MESSAGE and value.type_name not in OPAQUE:
                        nested = value.type_name
                else:
                    nested = field.type_name
                if nested:
                    wanted.append(nested)
            for key in {field.json_name or field.name, field.name}:
                fields[key] = (nested, is_map)
        seen[name] = fields
    lines = [
        "-- Generated by `make proto` (scripts/request_schema.py) from proto/: do not edit.",
        "return {",
        "  routes = {",
    ]
    for method, pattern, input_type in routes:
        lines.append(
            f"    {{method = {_lua_string(method)}, path = {_lua_string(pattern)},"
            f" message = {_lua_string(input_type)}}},"
        )
    lines += ["  },", "  messages = {"]
    for name in sorted(seen):
        lines.append(f"    [{_lua_string(name)}] = {{")
        for key in sorted(seen[name]):
            nested, is_map = seen[name][key]
            lines.append(
                f"      [{_lua_string(key)}] = {{message = {_lua_string(nested)},"
                f" map = {'true' if is_map else 'false'}}},"
            )
        lines.append("    },")
    lines += ["  },", "}", ""]
    return "\n".join(lines)
