"""Emails without attachments are written directly: byte for byte what the email package writes."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_mime import stored as stored_with_html

from core.store.documents import Email
from workers import mime, mime_plain

_BOUNDARY = re.compile(rb"={15}\d{19}==")


def stored(**changes: Any) -> Email:
    """An email as the worker reads it: text only unless ``html`` is given."""
    return stored_with_html(**{"html": "", **changes})


def both_ways(email: Email) -> tuple[bytes | None, bytes]:
    """What mime_plain writes (None: left to the package), and what the package writes."""
    headers, utf8 = mime._own_headers(email)
    direct = mime_plain.render(
        [(n, v) for n, v, _ in headers], email.text or "", email.html or "", utf8=utf8
    )
    package = mime._with_email_package(email, headers, utf8, None)
    if direct is not None:  # each draws its own boundary
        direct = _BOUNDARY.sub(b"B", direct)
        package = _BOUNDARY.sub(b"B", package)
    return direct, package


def test_a_text_email_is_written_directly_as_the_package_writes_it() -> None:
    direct, package = both_ways(stored())
    assert direct is not None and direct == package


def test_an_html_email_too() -> None:
    direct, package = both_ways(stored(html="<p>Thanks, Zoë</p>\n<p>Ann</p>"))
    assert direct is not None and direct == package


def test_a_body_line_over_998_bytes_is_left_to_the_package_which_encodes_it() -> None:
    email = stored(text="x" * 999)
    direct, package = both_ways(email)
    assert direct is None
    assert mime.build_mime(email) == mime._with_email_package(
        email, *mime._own_headers(email), None
    )
    assert b"Content-Transfer-Encoding: quoted-printable" in package


def test_build_mime_takes_the_direct_way_for_an_email_without_attachments(monkeypatch) -> None:
    def package(*args: object) -> bytes:
        raise AssertionError("the email package was used")

    monkeypatch.setattr(mime, "_with_email_package", package)
    raw = mime.build_mime(stored(html="<p>hi</p>"))
    assert b"Content-Type: multipart/alternative" in raw


def test_a_header_the_package_would_fold_again_is_left_to_it() -> None:
    assert mime_plain.render([("X-Long", "a" * 995)], "hi", "", utf8=False) is None
    assert mime_plain.render([("X-Long", "a\r\n " + "b" * 998)], "hi", "", utf8=False) is None
    assert mime_plain.render([("Subject", "Zoë")], "hi", "", utf8=False) is None
    assert mime_plain.render([("Subject", "Zoë")], "hi", "", utf8=True) is not None


TEXT = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF), max_size=40)
    | st.sampled_from(["\r\n", "\n", "\r", " ", "--", "=", "=" * 15]),
    max_size=12,
).map("".join)
LONG_LINES = st.integers(min_value=990, max_value=1010).map(lambda n: "y" * n)
NAMES = st.sampled_from(["Ann", "Zoë Ü", 'Smith, "Jo"', "", "A" * 60])
SUBJECTS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), max_codepoint=0x2FFF),
    max_size=120,
).map(str.strip)


def _entry(name: str, local: str) -> str:
    return f"{name} <{local}@example.com>" if name else f"{local}@example.com"


@hsettings(max_examples=400, deadline=None)
@given(
    text=TEXT | LONG_LINES,
    html=st.none() | TEXT | LONG_LINES,
    subject=SUBJECTS,
    to_name=NAMES,
    local=st.sampled_from(["ann", "josé", "o'brien"]),
    cc=st.booleans(),
    reply_to=st.booleans(),
    extra=st.dictionaries(
        st.sampled_from(["X-Campaign", "List-Unsubscribe", "X-Note"]),
        st.text(alphabet="abc xyzé<>:/@", min_size=1, max_size=40).map(str.strip).filter(bool),
        max_size=2,
    ),
)
def test_any_email_without_attachments_is_written_as_the_package_writes_it(
    text: str,
    html: str | None,
    subject: str,
    to_name: str,
    local: str,
    cc: bool,
    reply_to: bool,
    extra: dict[str, str],
) -> None:
    fields: dict[str, Any] = {
        "to": [_entry(to_name, local)],
        "subject": subject,
        "text": text,
        "headers": extra,
    }
    fields["html"] = html or ""
    if cc:
        fields["cc"] = ["Bo <bo@example.org>", "cy@example.net"]
    if reply_to:
        fields["reply_to"] = _entry(to_name, "replies")
    try:
        email = stored(**fields)
    except ValueError:
        return  # not an email the API would accept
    direct, package = both_ways(email)
    if direct is not None:
        assert direct == package
