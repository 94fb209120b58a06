"""Validation of a SendEmail request's attachments, extra headers, tags and metadata.

Called by :func:`server.validation.validate_send_request`, which gathers every violation into
one InvalidArgument. The field paths the violations name:

* ``attachments`` (the count, or the total size), ``attachments[i].filename``,
  ``attachments[i].content_type``, ``attachments[i].content``, ``attachments[i].content_id``;
* ``headers`` (the count) and ``headers["X-Name"]``;
* ``tags`` (the count) and ``tags[i]`` (the index in the request);
* ``metadata`` (the count) and ``metadata["key"]``.

Map keys are quoted as JSON strings (control characters escaped, cut after
:data:`MAX_KEY_IN_FIELD` characters), so a field path is always printable, whatever a client sent.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence

from core.addresses import MAX_HEADER_LINE_CHARS, header_unsafe
from core.errors import FieldViolation
from core.settings import Settings
from core.store.repository import NewAttachment
from mailroom.v1 import mail_pb2

MAX_FILENAME_CHARS = 255
MAX_CONTENT_ID_CHARS = 255
MAX_HEADERS = 50
MAX_HEADER_VALUE_CHARS = MAX_HEADER_LINE_CHARS
MAX_METADATA_VALUE_CHARS = 256
#: A map key longer than this is cut (with "…") in the field path that names it.
MAX_KEY_IN_FIELD = 80
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# RFC 6838 4.2 restricted names: `type/subtype`, no parameters (the MIME builder adds those).
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
# A Content-ID without its angle brackets: RFC 5322 atext, dots and one "@" side or two; ASCII
# so that an HTML body's `cid:` URL needs no escaping.
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")
# An RFC 5322 field name, narrowed to what is also a safe BSON key.
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,76}")
_TAG = re.compile(r"[a-z0-9_-]{1,64}")
# No dots or dollars: a key is a BSON key and the `metadata.<key>` filter of ListEmails.
_METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,256}")

#: Headers the service writes itself (lowercase). Resent-* and Orig-Date are trace or date
#: fields the email package parses as structured (a malformed one would break the build).
OWNED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "date",
        "orig-date",
        "sender",
        "return-path",
        "mime-version",
        "x-mailroom-id",
    }
)
OWNED_HEADER_PREFIXES = ("content-", "mime-", "resent-")

# Bidirectional controls make "invoice\u202efdp.exe" read as "invoiceexe.pdf".
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Types that must not be sent base64-encoded (RFC 2046 5.1.1 and 5.2.1).
_COMPOSITE_TYPES = ("multipart/", "message/")
# The built-in table only (not /etc/mime.types), so a guess is the same on every host.
_MIME_TYPES = mimetypes.MimeTypes()
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
}


def key_field(name: str, key: str) -> str:
    """The field path of a map entry: ``headers["X-Name"]``, quoted as a JSON string."""
    shown = key if len(key) <= MAX_KEY_IN_FIELD else key[:MAX_KEY_IN_FIELD] + "…"
    return f"{name}[{json.dumps(shown, ensure_ascii=False)}]"


def guess_content_type(filename: str) -> str:
    """The MIME type of a file name's extension; application/octet-stream when unknown."""
    guessed, encoding = _MIME_TYPES.guess_type(filename, strict=False)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, DEFAULT_CONTENT_TYPE)
    if guessed is None or guessed.startswith(_COMPOSITE_TYPES):
        return DEFAULT_CONTENT_TYPE
    return guessed


def blocked_extension(filename: str, blocked: Iterable[str]) -> str | None:
    """The refused extension ``filename`` ends with (e.g. ``.exe``), or None.

    Trailing dots and blanks are ignored, as Windows drops them: ``a.exe.`` opens as ``a.exe``.
    """
    name = filename.rstrip(" .").lower()
    for extension in blocked:
        ext = "." + extension.strip().lower().lstrip(".")
        if ext != "." and name.endswith(ext):
            return ext
    return None


def _filename_problem(filename: str, blocked: Sequence[str]) -> str | None:
    if not filename.strip():
        return "must not be empty"
    unsafe = header_unsafe(filename)
    if unsafe:
        return unsafe
    if filename != filename.strip():
        return "must not start or end with blanks"
    if "/" in filename or "\\" in filename:
        return "must be a file name, without / or \\"
    if filename.strip(".") == "":
        return "must be a file name, not . or .."
    if any(char in _BIDI_CONTROLS for char in filename):
        return "must not contain bidirectional control characters"
    if len(filename) > MAX_FILENAME_CHARS:
        return f"{len(filename)} characters; at most {MAX_FILENAME_CHARS}"
    ext = blocked_extension(filename, blocked)
    if ext:
        return f"{filename!r} is not allowed (blocked type {ext})"
    return None


def _content_type(value: str, filename: str, field: str, violations: list[FieldViolation]) -> str:
    if not value:
        return guess_content_type(filename)
    if not _CONTENT_TYPE.fullmatch(value):
        violations.append(
            FieldViolation(field, f"{value[:100]!r} is not a MIME type of the form type/subtype")
        )
        return ""
    if value.lower().startswith(_COMPOSITE_TYPES):
        violations.append(
            FieldViolation(field, "multipart/ and message/ types cannot be attached as files")
        )
        return ""
    return value.lower()


def _content_id_problem(value: str) -> str | None:
    if len(value) > MAX_CONTENT_ID_CHARS:
        return f"{len(value)} characters; at most {MAX_CONTENT_ID_CHARS}"
    if "<" in value or ">" in value:
        return "without < and > (they are added)"
    if not _CONTENT_ID.fullmatch(value):
        return "ASCII letters, digits and !#$%&'*+/=?^_`{|}~.@- only"
    return None


def check_attachments(
    attachments: Sequence[mail_pb2.Attachment],
    settings: Settings,
    violations: list[FieldViolation],
) -> list[NewAttachment]:
    """Validate the attachments; return them with their content types filled in.

    An empty file is refused: proto3 cannot tell an empty ``content`` from a missing (or
    misspelt) one, and a zero-byte file is almost always that mistake.
    """
    if len(attachments) > settings.max_attachments:
        violations.append(
            FieldViolation(
                "attachments",
                f"{len(attachments)} attachments; at most {settings.max_attachments}",
            )
        )
        return []
    checked: list[NewAttachment] = []
    content_ids: dict[str, int] = {}
    for i, attachment in enumerate(attachments):
        prefix = f"attachments[{i}]"
        before = len(violations)
        problem = _filename_problem(attachment.filename, settings.blocked_attachment_extensions)
        if problem:
            violations.append(FieldViolation(f"{prefix}.filename", problem))
        content_type = _content_type(
            attachment.content_type, attachment.filename, f"{prefix}.content_type", violations
        )
        if not attachment.content:
            violations.append(FieldViolation(f"{prefix}.content", "must not be empty"))
        content_id = attachment.content_id
        if content_id:
            problem = _content_id_problem(content_id)
            first = content_ids.setdefault(content_id.lower(), i)
            if problem is None and first != i:
                problem = f"the same as attachments[{first}].content_id"
            if problem:
                violations.append(FieldViolation(f"{prefix}.content_id", problem))
        if len(violations) == before:
            checked.append(
                NewAttachment(
                    filename=attachment.filename,
                    content_type=content_type,
                    content=attachment.content,
                    content_id=content_id,
                )
            )
    return checked


def _header_problem(name: str, value: str) -> str | None:
    if not _HEADER_NAME.fullmatch(name):
        return "a header name is 1 to 76 letters, digits or -"
    lower = name.lower()
    if lower in OWNED_HEADERS or lower.startswith(OWNED_HEADER_PREFIXES):
        return f"{name} is written by the service and cannot be set"
    unsafe = header_unsafe(value)
    if unsafe:
        return f"the value {unsafe}"
    if not value.strip():
        return "the value must not be empty"
    if len(value) > MAX_HEADER_VALUE_CHARS:
        return f"the value is {len(value)} characters; at most {MAX_HEADER_VALUE_CHARS}"
    return None


def check_headers(headers: Mapping[str, str], violations: list[FieldViolation]) -> dict[str, str]:
    """Validate the extra headers; return them with their values stripped of outer blanks.

    Names are case-insensitive, as in a message: ``X-A`` and ``x-a`` together are refused.
    """
    if len(headers) > MAX_HEADERS:
        violations.append(
            FieldViolation("headers", f"{len(headers)} headers; at most {MAX_HEADERS}")
        )
        return {}
    checked: dict[str, str] = {}
    seen: dict[str, str] = {}
    # Sorted, so that the violations come in the same order whatever the map's order.
    for name in sorted(headers):
        value = headers[name]
        problem = _header_problem(name, value)
        first = seen.setdefault(name.lower(), name)
        if problem is None and first != name:
            problem = f"the same header as {key_field('headers', first)} (names ignore case)"
        if problem:
            violations.append(FieldViolation(key_field("headers", name), problem))
        else:
            # Outer blanks do not survive a reader's parse of the header.
            checked[name] = value.strip()
    return checked


def check_tags(
    tags: Sequence[str], settings: Settings, violations: list[FieldViolation]
) -> list[str]:
    """Validate the tags; return them without duplicates, in their first order."""
    checked: list[str] = []
    for i, tag in enumerate(tags):
        if not _TAG.fullmatch(tag):
            violations.append(
                FieldViolation(
                    f"tags[{i}]",
                    f"{tag[:80]!r} is not a tag: 1 to 64 lowercase letters, digits, _ or -",
                )
            )
        elif tag not in checked:
            checked.append(tag)
    if len(checked) > settings.max_tags:
        violations.append(
            FieldViolation("tags", f"{len(checked)} tags; at most {settings.max_tags}")
        )
    return checked


def check_metadata(
    metadata: Mapping[str, str], settings: Settings, violations: list[FieldViolation]
) -> dict[str, str]:
    """Validate the metadata pairs; return them as given.

    Values follow the header rule (no control characters): providers pass metadata on in
    headers or API fields.
    """
    if len(metadata) > settings.max_metadata:
        violations.append(
            FieldViolation("metadata", f"{len(metadata)} pairs; at most {settings.max_metadata}")
        )
        return {}
    checked: dict[str, str] = {}
    for key in sorted(metadata):
        value = metadata[key]
        problem = None
        if not _METADATA_KEY.fullmatch(key):
            problem = "a key is 1 to 256 letters, digits, _ or -"
        elif len(value) > MAX_METADATA_VALUE_CHARS:
            problem = f"the value is {len(value)} characters; at most {MAX_METADATA_VALUE_CHARS}"
        elif header_unsafe(value):
            problem = f"the value {header_unsafe(value)}"
        if problem:
            violations.append(FieldViolation(key_field("metadata", key), problem))
        else:
            checked[key] = value
    return checked
