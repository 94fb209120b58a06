"""The validation invariant, by property: validate accepts => the MIME builder builds it.

For every generated SendEmail request (addresses, display names, subjects and bodies drawn from
the whole of Unicode, with the characters that have bitten us mixed in: line separators, control
characters, NUL, quotes and specials, IDN and punycode domains, quoted local parts):

* refused: an InvalidArgument whose violations name fields the request has;
* accepted: ``workers.mime.build_outgoing`` builds it, and the parsed message has the same
  recipients (To, Cc; Bcc only in the envelope), subject and bodies; the SMTP provider's envelope
  addresses are the parsed ones, ASCII unless a local part is not (SMTPUTF8 only then).

``test_the_property_finds_a_line_separator_in_the_title`` shows the property is strong enough:
with U+2028 taken out of the header rule it fails, from scratch (no example database).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.policy import default
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import server.validation
import workers.mime
from core.addresses import encode_header_text, header_unsafe
from core.errors import InvalidArgument
from core.settings import Settings
from core.store.documents import Email
from core.store.repository import new_email_document
from mailroom.v1 import mail_pb2
from server.validation import validate_send_request
from workers.mime import build_outgoing
from workers.mta.smtp import _addr_spec

SETTINGS = Settings(_env_file=None)
# Enough to find the U+2028 title from scratch (the meta test below): measured over 30 runs
# with no example database, the first failing example was the 77th at the median (0.7 s) and
# the 299th at worst (4 s). The property itself takes about 5 s at 500.
EXAMPLES = 500

# The characters that broke headers before, and the syntax of addresses.
TRICKY_CHARS = list(
    "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\x00\t\r\n \xa0\u3000\u200b\ufeff\"\\<>,;:@()[]=?._-+'é😀"
)
TRICKY = [*TRICKY_CHARS, "=?utf-8?q?x?=", "\r\n ", "xn--"]
ANY_CHAR = st.characters(exclude_categories=["Cs"])  # the whole of Unicode but lone surrogates
CHARS = st.one_of(ANY_CHAR, st.sampled_from(TRICKY_CHARS))
PRINTABLE = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=20
)
TEXT = st.one_of(
    st.text(CHARS, max_size=40),
    st.lists(st.sampled_from(TRICKY) | st.text(CHARS, max_size=3), max_size=12).map("".join),
    # One tricky character in otherwise printable text: each one alone, not hidden by others.
    st.builds(lambda a, c, b: a + c + b, PRINTABLE, st.sampled_from(TRICKY), PRINTABLE),
)


def mostly(good: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Nine parts good to one part wild, so that whole requests are accepted often enough."""
    return st.integers(0, 9).flatmap(lambda i: wild if i == 9 else good)


ASCII_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
UNICODE_LABEL = st.sampled_from(["bücher", "例え", "пример", "παράδειγμα", "straße", "ÉCOLE"])
PUNY_LABEL = st.sampled_from(["xn--bcher-kva", "xn--r8jz45g", "xn--e1afmkfd", "xn--zca"])
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(ASCII_LABEL | UNICODE_LABEL | PUNY_LABEL, min_size=1, max_size=3),
    st.sampled_from(["com", "example", "org", "рф", "xn--p1ai"]),
)
PLAIN_LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,5})?", fullmatch=True
)
UTF8_LOCAL = st.sampled_from(["ü", "用户", "josé.ñ"])  # these need SMTPUTF8
ODD_LOCAL = st.sampled_from(['"quoted local"', '"a\\"b"', '"ok"', "a..b", ".a", "a b"])
ADDR_SPEC = st.builds(
    lambda local, domain: f"{local}@{domain}", mostly(PLAIN_LOCAL, UTF8_LOCAL), DOMAIN
)
WILD_ADDR_SPEC = st.builds(
    lambda local, domain: f"{local}@{domain}", ODD_LOCAL | TEXT, DOMAIN | TEXT
)
NAME = mostly(PRINTABLE, st.one_of(TEXT, st.text(ANY_CHAR, max_size=30)))


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


ENTRY = mostly(
    st.one_of(
        ADDR_SPEC,
        st.builds(lambda name, spec: f"{_quoted(name)} <{spec}>", NAME, ADDR_SPEC),
    ),
    st.one_of(
        st.builds(lambda name, spec: f"{name} <{spec}>", NAME, ADDR_SPEC),
        st.builds(lambda a, b: f"{a}, {b}", ADDR_SPEC, ADDR_SPEC),
        WILD_ADDR_SPEC,
        TEXT,
    ),
)
BODY = mostly(
    st.text(ANY_CHAR | st.sampled_from("\r\n\t \u2028\x85"), min_size=1, max_size=300),
    st.text(CHARS, max_size=200) | st.lists(st.sampled_from(TRICKY) | TEXT).map("".join),
)
# The line breaks str.splitlines() knows besides CR and LF, and the other controls.
BREAKERS = list("\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e")
TITLE = st.integers(0, 3).flatmap(
    lambda i: [
        st.one_of(PRINTABLE, st.lists(PRINTABLE, min_size=2, max_size=12).map(" ".join)),
        # One line break in printable text (each alone, not hidden by others).
        st.builds(lambda a, c, b: a + c + b, PRINTABLE, st.sampled_from(BREAKERS), PRINTABLE),
        st.builds(lambda a, c, b: a + c + b, PRINTABLE, st.sampled_from(TRICKY), PRINTABLE),
        st.one_of(TEXT, st.text(ANY_CHAR, min_size=1)),
    ][i]
)

REQUEST = st.fixed_dictionaries(
    {
        "to": st.lists(ENTRY, min_size=1, max_size=2),
        "title": TITLE,
        "content": BODY,
    },
    optional={
        "cc": st.lists(ENTRY, max_size=1),
        "bcc": st.lists(ENTRY, max_size=1),
        "html": BODY,
        "from_address": ENTRY,
        "reply_to": ENTRY,
    },
)


def _field_names(fields: dict[str, Any]) -> set[str]:
    names = {"to", "cc", "bcc", "title", "content", "html", "idempotency_key", "send_at"}
    for key in ("to", "cc", "bcc"):
        names |= {f"{key}[{i}]" for i in range(len(fields.get(key, [])))}
    if fields.get("from_address"):
        names.add("from")
    if fields.get("reply_to"):
        names.add("reply_to")
    return names


def _addresses(header: str | None) -> list[tuple[str, str]]:
    if not header:
        return []
    parsed = default.header_factory("to", header)
    return [(a.display_name, a.addr_spec) for a in parsed.addresses]


def _lines(body: str) -> str:
    """A body as a reader gets it back: LF line ends, ending with one."""
    text = re.sub(r"\r\n|\r", "\n", body)
    return text if text.endswith("\n") else text + "\n"


def check_invariant(fields: dict[str, Any]) -> None:
    """The property, for one request."""
    request = mail_pb2.SendEmailRequest(**fields)
    try:
        new = validate_send_request(request, SETTINGS, now=datetime(2026, 1, 1))
    except InvalidArgument as exc:
        assert exc.violations
        unknown = {v.field for v in exc.violations} - _field_names(fields)
        assert not unknown, f"violations name fields the request lacks: {unknown}"
        return

    email_id = ObjectId()
    document = new_email_document(
        new, message_id_domain="mailroom.local", email_id=email_id, now=datetime(2026, 1, 1)
    )
    outgoing = build_outgoing(Email._from_son(document))

    assert b"\x00" not in outgoing.mime
    assert all(len(line) <= 998 for line in outgoing.mime.split(b"\r\n"))
    message: EmailMessage = BytesParser(policy=default).parsebytes(outgoing.mime)  # type: ignore[assignment]
    headers = Parser(policy=default).parsestr(outgoing.mime.decode("utf-8"), headersonly=True)

    assert not message.defects
    assert headers["Subject"] == new.subject
    for name, stored in (("To", new.to), ("Cc", new.cc)):
        want = [pair for entry in stored for pair in _addresses(entry)]
        assert _addresses(headers[name]) == want, name
        assert len(want) == len(stored)
    assert "Bcc" not in message
    assert _addresses(headers["From"]) == _addresses(new.from_address)
    if new.reply_to:
        assert _addresses(headers["Reply-To"]) == _addresses(new.reply_to)

    # The envelope the SMTP provider sends: the same addr-specs, ASCII unless a local part is not.
    for entry in (new.from_address, *new.to, *new.cc, *new.bcc):
        (_, spec) = _addresses(entry)[0]
        assert _addr_spec(entry) == spec
        local = spec.rpartition("@")[0]
        assert spec.isascii() == local.isascii()

    if new.html:
        text_part = message.get_body(("plain",))
        html_part = message.get_body(("html",))
        assert html_part is not None
        assert _lines(html_part.get_content()) == _lines(new.html)
    else:
        text_part = message
    assert text_part is not None
    assert _lines(text_part.get_content()) == _lines(new.text)


@hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUEST)
def test_accepted_requests_build_and_round_trip(fields):
    check_invariant(fields)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("title", "a\u2028b", "title"),
        ("title", "a\x85b", "title"),
        ("title", "a\x0bb", "title"),
        ("title", "a\x0cb", "title"),
        ("title", "a\x1cb", "title"),
        ("title", "a\x00b", "title"),
        ("to", ["Bob\x1d <bob@example.com>"], "to[0]"),
        ("to", ["Bob\x1e <bob@example.com>"], "to[0]"),
        ("to", ["Bob\u2028 <bob@example.com>"], "to[0]"),
        ("from_address", "Bob\x00 <bob@example.com>", "from"),
        ("reply_to", "=?utf-8?q?a=0Ab?= <r@example.com>", "reply_to"),
        ("content", "a\x00b", "content"),
        ("html", "<p>\x00</p>", "html"),
    ],
)
def test_header_unsafe_characters_are_refused_naming_the_field(field, value, named):
    fields: dict[str, Any] = {"to": ["a@example.com"], "title": "hi", "content": "x"}
    fields[field] = value
    with pytest.raises(InvalidArgument) as info:
        validate_send_request(mail_pb2.SendEmailRequest(**fields), SETTINGS)
    assert named in [v.field for v in info.value.violations]


def test_the_property_finds_a_line_separator_in_the_title(monkeypatch):
    """Without its two defences the U+2028 title of issue 11 is found from scratch (no database).

    Validation lets U+2028 through, and the Subject is set as before (the email package refuses
    any value ``str.splitlines`` splits: "Header values may not contain linefeed").
    """
    monkeypatch.setattr(
        server.validation, "header_unsafe", lambda value: header_unsafe(value.replace("\u2028", ""))
    )

    def subject_as_before(text: str) -> str:
        if len(text.splitlines()) > 1:
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        return encode_header_text(text)

    monkeypatch.setattr(workers.mime, "encode_header_text", subject_as_before)
    found: list[str] = []

    class Found(Exception):
        pass

    # Four times the property's budget: the search stops at the first find (the 77th example
    # at the median), so this costs nothing when it finds it, and a rare unlucky draw of 500
    # (seen once in a full run on 12-03) does not fail the suite.
    @hsettings(max_examples=EXAMPLES * 4, deadline=None, database=None, phases=[Phase.generate])
    @given(REQUEST)
    def prop(fields):
        try:
            check_invariant(fields)
        except Exception:
            found.append(fields["title"])
            raise Found from None

    with pytest.raises(Found):
        prop()
    assert any("\u2028" in title for title in found)
