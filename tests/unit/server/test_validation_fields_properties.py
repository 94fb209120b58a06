"""The validation invariant for attachments and extra headers, by property.

Like ``test_validation_properties.py`` for addresses and subjects: for every generated request
with attachments, extra headers, tags and metadata (file names, content ids and header values
from the whole of Unicode, with the characters that break headers mixed in):

* refused: an InvalidArgument whose violations name fields the request has;
* accepted: ``workers.mime.build_outgoing`` builds it; the parsed message has every extra header
  with its value, and every attachment with its file name, type, bytes and Content-ID; no line is
  longer than 998 characters; the parser finds no defect in any part.

Checked by hand (not kept as tests): with multipart/ types or any Content-ID accepted, the
property fails within 600 generated examples (a part the parser finds broken).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

from bson import ObjectId
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.errors import InvalidArgument
from core.settings import Settings
from core.store.documents import Email
from core.store.repository import NewEmail, new_email_document
from mailroom.v1 import mail_pb2
from server.validation import validate_send_request
from server.validation_fields import key_field
from workers.mime import build_outgoing

SETTINGS = Settings(_env_file=None)
EXAMPLES = 200

TRICKY_CHARS = [
    *"\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\x00\t\r\n \xa0\u3000\u200b\ufeff\u202e",
    *"\"'\\/<>,;:@()[]=?*%._-é😀",
]
TRICKY = [*TRICKY_CHARS, "=?utf-8?q?x?=", "=?", "\r\n ", "..", "%00"]
ANY_CHAR = st.characters(exclude_categories=["Cs"])
CHARS = st.one_of(ANY_CHAR, st.sampled_from(TRICKY_CHARS))
PRINTABLE = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=40
)
WILD_TEXT = st.one_of(
    st.text(CHARS, max_size=40),
    st.lists(st.sampled_from(TRICKY) | st.text(CHARS, max_size=3), max_size=12).map("".join),
    st.builds(lambda a, c, b: a + c + b, PRINTABLE, st.sampled_from(TRICKY), PRINTABLE),
)


def mostly(good: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine parts good to one part wild, so that whole requests are accepted often enough."""
    return st.sampled_from([False] * 9 + [True]).flatmap(lambda w: wild if w else good)


EXTENSION = st.sampled_from([".pdf", ".png", ".txt", ".csv", ".tar.gz", ".eml", "", ".EXE", ".js"])
FILENAME = mostly(
    st.builds(lambda stem, ext: stem.strip() + ext, PRINTABLE, EXTENSION).filter(
        lambda name: name.strip() == name and name
    ),
    st.one_of(WILD_TEXT, st.text(ANY_CHAR, min_size=200, max_size=300)),
)
CONTENT_TYPE = mostly(
    st.sampled_from(["", "application/pdf", "image/PNG", "text/plain", "application/vnd.a+json"]),
    st.one_of(WILD_TEXT, st.sampled_from(["multipart/mixed", "message/rfc822", "text/plain; a=b"])),
)
# Wild more often than the rest: most attachments have no content id, and a bad one must be seen.
CONTENT_ID = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Za-z0-9.@_-]{1,40}", fullmatch=True),
    WILD_TEXT,
    st.from_regex(r"[!#$%&'*+/=?^_`{|}~.@-]{1,20}", fullmatch=True),
)
ATTACHMENT = st.builds(
    lambda filename, content_type, content, content_id: mail_pb2.Attachment(
        filename=filename, content_type=content_type, content=content, content_id=content_id
    ),
    FILENAME,
    CONTENT_TYPE,
    mostly(st.binary(min_size=1, max_size=300), st.just(b"")),
    CONTENT_ID,
)
HEADER_NAME = mostly(
    st.one_of(
        st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
        st.sampled_from(["List-Unsubscribe", "In-Reply-To", "References", "Keywords", "Comments"]),
    ),
    st.one_of(
        WILD_TEXT,
        st.sampled_from(["Subject", "content-type", "Bcc", "Resent-Date", "MIME-X", "X_Y", "X Y"]),
    ),
)
HEADER_VALUE = mostly(
    st.one_of(
        PRINTABLE,
        st.lists(PRINTABLE, min_size=2, max_size=60).map(" ".join),
        st.text(st.sampled_from("ab=?<>@."), min_size=900, max_size=998),
    ),
    st.one_of(WILD_TEXT, st.text(ANY_CHAR, max_size=1000)),
)
TAG = mostly(st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True), WILD_TEXT)
METADATA_KEY = mostly(st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True), WILD_TEXT)
METADATA_VALUE = mostly(
    st.text(st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=256),
    st.one_of(WILD_TEXT, st.text(ANY_CHAR, max_size=300)),
)

REQUEST = st.fixed_dictionaries(
    {
        "to": st.just(["a@example.com"]),
        "title": st.just("Your files"),
        "content": st.just("See the attachments."),
        "attachments": st.lists(ATTACHMENT, max_size=4),
        "headers": st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=4),
        "tags": st.lists(TAG, max_size=4),
        "metadata": st.dictionaries(METADATA_KEY, METADATA_VALUE, max_size=4),
    },
    optional={"html": st.just('<p>See <img src="cid:x"></p>')},
)


def _field_names(fields: dict[str, Any]) -> set[str]:
    names = {"attachments", "headers", "tags", "metadata"}
    for i in range(len(fields["attachments"])):
        names |= {f"attachments[{i}].{f}" for f in ("filename", "content_type", "content")}
        names.add(f"attachments[{i}].content_id")
    names |= {f"tags[{i}]" for i in range(len(fields["tags"]))}
    names |= {key_field("headers", name) for name in fields["headers"]}
    names |= {key_field("metadata", key) for key in fields["metadata"]}
    return names


def _parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if isinstance(part, EmailMessage)]


def check_invariant(fields: dict[str, Any]) -> NewEmail | None:
    """The property, for one request; the validated email when it was accepted."""
    request = mail_pb2.SendEmailRequest(**fields)
    try:
        new = validate_send_request(request, SETTINGS, now=datetime(2026, 1, 1))
    except InvalidArgument as exc:
        assert exc.violations
        unknown = {v.field for v in exc.violations} - _field_names(fields)
        assert not unknown, f"violations name fields the request lacks: {unknown}"
        return None

    document = new_email_document(
        new, message_id_domain="mailroom.local", email_id=ObjectId(), now=datetime(2026, 1, 1)
    )
    outgoing = build_outgoing(Email._from_son(document))

    assert b"\x00" not in outgoing.mime
    assert all(len(line) <= 998 for line in outgoing.mime.split(b"\r\n"))
    message: EmailMessage = BytesParser(policy=default).parsebytes(outgoing.mime)  # type: ignore[assignment]
    for part in _parts(message):
        assert not part.defects, (part.get_content_type(), part.defects)
    for name, value in new.headers.items():
        assert message[name] == value, name
    files = [part for part in _parts(message) if part.get_content_disposition()]
    got = [
        (
            part.get_filename(),
            part.get_content_type(),
            part.get_payload(decode=True),
            (part["Content-ID"] or "").strip("<>"),
        )
        for part in files
    ]
    want = [(a.filename, a.content_type, a.content, a.content_id) for a in new.attachments]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    return new


@hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUEST)
def test_accepted_attachments_and_headers_build_and_read_back(fields):
    check_invariant(fields)


def test_the_strategies_reach_accepted_requests_with_every_field():
    """Guards the property against strategies that only ever produce refusals.

    Measured over 500 requests: about 30 % are accepted, 6 % with both tags and metadata, so
    300 examples see each kind (validation only: this checks the strategies, not the builder).
    """
    accepted: list[NewEmail] = []

    @hsettings(max_examples=300, deadline=None, database=None)
    @given(REQUEST)
    def collect(fields):
        with contextlib.suppress(InvalidArgument):
            accepted.append(validate_send_request(mail_pb2.SendEmailRequest(**fields), SETTINGS))

    collect()
    assert any(new.attachments for new in accepted)
    assert any(new.headers for new in accepted)
    assert any(new.tags and new.metadata for new in accepted)
