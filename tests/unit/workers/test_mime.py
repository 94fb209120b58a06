"""The MIME builder with attachments, inline parts and extra headers, read back by a client."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

from bson import ObjectId
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.addresses import header_unsafe
from core.store.documents import Email
from core.store.repository import NewAttachment, NewEmail, new_email_document
from workers.mime import build_mime, build_outgoing, extra_header_value
from workers.mta.base import OutgoingAttachment

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 300
LOGO = NewAttachment("logo.png", "image/png", PNG, content_id="logo@mailroom")
REPORT = NewAttachment("report.pdf", "application/pdf", PDF)


def stored(**changes: Any) -> Email:
    fields: dict[str, Any] = {
        "from_address": "Mailroom <noreply@example.com>",
        "to": ["Ann <ann@example.com>"],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
        "html": '<p>Thanks <img src="cid:logo@mailroom"></p>',
    }
    fields.update(changes)
    document = new_email_document(
        NewEmail(**fields),
        message_id_domain="mailroom.local",
        email_id=ObjectId(),
        now=datetime(2026, 1, 1),
    )
    return Email._from_son(document)


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    return message


def tree(message: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.walk()]


def test_a_plain_email_keeps_its_shape() -> None:
    message = parse(build_mime(stored()))

    assert tree(message) == ["multipart/alternative", "text/plain", "text/html"]
    assert list(message.iter_attachments()) == []


def test_attachment_and_inline_image_with_html() -> None:
    message = parse(build_mime(stored(attachments=[REPORT, LOGO])))

    assert tree(message) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    body = message.get_body(("html",))
    assert body is not None and "cid:logo@mailroom" in body.get_content()
    parts = {part.get_content_type(): part for part in message.walk()}
    logo, report = parts["image/png"], parts["application/pdf"]
    assert logo.get_content_disposition() == "inline"
    assert logo["Content-ID"] == "<logo@mailroom>"
    assert logo.get_filename() == "logo.png"
    assert logo.get_content() == PNG
    assert report.get_content_disposition() == "attachment"
    assert report.get_filename() == "report.pdf"
    assert report.get_content() == PDF
    assert report["Content-ID"] is None


def test_inline_part_without_html_goes_in_the_mixed_part() -> None:
    message = parse(build_mime(stored(html="", attachments=[LOGO])))

    assert tree(message) == ["multipart/mixed", "text/plain", "image/png"]
    [logo] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert logo.get_content_disposition() == "inline"
    assert logo["Content-ID"] == "<logo@mailroom>"


def test_non_ascii_file_names_are_rfc_2231_and_read_back() -> None:
    short = "rapport d'été.pdf"
    long = "日本語のファイル名" * 28 + ".pdf"  # 256 characters: split into continuations
    raw = build_mime(
        stored(
            attachments=[
                NewAttachment(short, "application/pdf", b"a"),
                NewAttachment(long, "application/pdf", b"b"),
            ]
        )
    )

    assert b"filename*=utf-8''rapport%20d%27%C3%A9t%C3%A9.pdf" in raw
    assert b"filename*0*=utf-8''" in raw
    message = parse(raw)
    assert [(a.get_filename(), a.get_content()) for a in message.iter_attachments()] == [
        (short, b"a"),
        (long, b"b"),
    ]


def test_an_smtputf8_email_carries_its_attachments() -> None:
    message = parse(build_mime(stored(to=["José <josé@example.com>"], attachments=[REPORT])))

    [report] = message.iter_attachments()
    assert report.get_filename() == "report.pdf"
    assert report.get_content() == PDF


def test_extra_headers_ascii_as_is_other_text_encoded() -> None:
    headers = {
        "List-Unsubscribe": "<https://example.com/u?id=1>, <mailto:u@example.com>",
        "X-Campaign": "Grüße aus Köln",
        "X-Encoded-Looking": "=?utf-8?q?not-a-word?=",
    }
    raw = build_mime(stored(headers=headers))

    # A structured header must reach the receiver unencoded (Gmail reads List-Unsubscribe raw).
    assert b"\r\nList-Unsubscribe: <https://example.com/u?id=1>, <mailto:u@example.com>\r\n" in raw
    assert "Grüße".encode() not in raw
    message = parse(raw)
    for name, value in headers.items():
        assert message[name] == value


def test_a_long_extra_header_is_folded_and_reads_back() -> None:
    spaced = " ".join(["token"] * 166)  # 995 characters
    unbroken = "x" * 990
    message = parse(build_mime(stored(headers={"X-Spaced": spaced, "X-Unbroken": unbroken})))

    assert message["X-Spaced"] == spaced
    assert message["X-Unbroken"] == unbroken


HEADER_SAFE = (
    st.text(
        st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]) | st.sampled_from(" =?é😀"),
        min_size=1,
        max_size=998,
    )
    .map(str.strip)
    .filter(lambda v: bool(v) and header_unsafe(v) is None)
)


@hsettings(max_examples=200, deadline=None)
@given(name=st.from_regex(r"X-[A-Za-z0-9-]{1,74}", fullmatch=True), value=HEADER_SAFE)
def test_any_valid_extra_header_reads_back_exactly(name: str, value: str) -> None:
    message = EmailMessage(policy=default)
    message.set_raw(name, extra_header_value(name, value))
    raw = message.as_bytes(policy=default.clone(linesep="\r\n", max_line_length=998))

    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert BytesParser(policy=default).parsebytes(raw)[name] == value


def test_build_outgoing_passes_everything_providers_need() -> None:
    email = stored(
        attachments=[REPORT, LOGO],
        headers={"X-Campaign": "spring"},
        tags=["receipt", "shop"],
        metadata={"order_id": "1234", "region": "eu"},
    )

    outgoing = build_outgoing(email)

    assert outgoing.attachments == (
        OutgoingAttachment("report.pdf", "application/pdf", PDF),
        OutgoingAttachment("logo.png", "image/png", PNG, content_id="logo@mailroom"),
    )
    assert [a.inline for a in outgoing.attachments] == [False, True]
    assert outgoing.headers == (("X-Campaign", "spring"),)
    assert outgoing.tags == ("receipt", "shop")
    assert dict(outgoing.metadata) == {"order_id": "1234", "region": "eu"}
    assert len(list(parse(outgoing.mime).iter_attachments())) == 1  # the inline one is related
