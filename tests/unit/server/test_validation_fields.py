"""Issue 9 items 3-5: attachments, extra headers, tags and metadata on SendEmail.

Every refused case names its field; accepted ones come out in the NewEmail as stored.
"""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from core.store.repository import NewAttachment
from mailroom.v1 import mail_pb2
from server.validation import validate_send_request
from server.validation_fields import blocked_extension, guess_content_type, key_field

PDF = mail_pb2.Attachment(filename="invoice.pdf", content=b"%PDF-1.7 ...")


def request(**overrides) -> mail_pb2.SendEmailRequest:
    fields = {"to": ["a@example.com"], "title": "Subject", "content": "body"}
    fields.update(overrides)
    return mail_pb2.SendEmailRequest(**fields)


def refusals(req, settings) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_send_request(req, settings)
    return {v.field: v.description for v in info.value.violations}


def attachment(**fields) -> mail_pb2.Attachment:
    return mail_pb2.Attachment(**{"filename": "a.txt", "content": b"x", **fields})


# Attachments


def test_attachments_round_trip_with_guessed_types(settings):
    new = validate_send_request(
        request(
            attachments=[
                PDF,
                attachment(filename="logo.PNG", content=b"\x89PNG", content_id="logo@shop"),
                attachment(filename="data.bin.unknownext"),
                attachment(filename="notes", content_type="Text/Plain"),
                attachment(filename="dump.tar.gz"),
                attachment(filename="fwd.eml"),
            ]
        ),
        settings,
    )
    assert new.attachments == [
        NewAttachment("invoice.pdf", "application/pdf", b"%PDF-1.7 ..."),
        NewAttachment("logo.PNG", "image/png", b"\x89PNG", "logo@shop"),
        NewAttachment("data.bin.unknownext", "application/octet-stream", b"x"),
        NewAttachment("notes", "text/plain", b"x"),
        NewAttachment("dump.tar.gz", "application/gzip", b"x"),
        # message/rfc822 cannot be base64-encoded: sent as plain bytes.
        NewAttachment("fwd.eml", "application/octet-stream", b"x"),
    ]


@pytest.mark.parametrize(
    "filename",
    ["virus.exe", "VIRUS.EXE", "a.pdf.exe", "a.exe.", "a.exe ..", ".bat", "x.Js", "s.ps1"],
)
def test_blocked_extensions_name_the_filename(settings, filename):
    problems = refusals(request(attachments=[PDF, attachment(filename=filename)]), settings)
    assert list(problems) == ["attachments[1].filename"]
    assert "is not allowed (blocked type ." in problems["attachments[1].filename"]


def test_the_blocked_list_is_a_setting(settings):
    mine = settings.model_copy(update={"blocked_attachment_extensions": ["PDF", ".zip"]})
    assert list(refusals(request(attachments=[PDF]), mine)) == ["attachments[0].filename"]
    validate_send_request(request(attachments=[attachment(filename="a.exe")]), mine)
    assert blocked_extension("a.exe.pdf", [".exe"]) is None
    assert blocked_extension("A.ZIP", ["zip"]) == ".zip"


@pytest.mark.parametrize(
    "filename",
    [
        "",
        " ",
        "../etc/passwd",
        "dir/a.txt",
        "c:\\a.txt",
        "a\x00.txt",
        "a\r\nX-Evil: 1.txt",
        "a\u2028.txt",
        "a\tb.txt",
        " lead.txt",
        "trail.txt ",
        "..",
        "invoice\u202efdp.zip",
        "x" * 252 + ".txt",
    ],
)
def test_bad_filenames_are_refused(settings, filename):
    assert list(refusals(request(attachments=[attachment(filename=filename)]), settings)) == [
        "attachments[0].filename"
    ]


def test_unicode_and_long_filenames_within_the_limit(settings):
    names = ["Überweisung März.pdf", "отчёт.xlsx", "x" * 251 + ".txt", "Report: Q3 (final).doc"]
    new = validate_send_request(
        request(attachments=[attachment(filename=n) for n in names]), settings
    )
    assert [a.filename for a in new.attachments] == names


@pytest.mark.parametrize(
    "content_type",
    ["pdf", "text/", "/plain", "text/plain; charset=utf-8", "text/pl ain", "a/b/c", "é/x"],
)
def test_content_type_must_be_type_slash_subtype(settings, content_type):
    req = request(attachments=[attachment(content_type=content_type)])
    assert list(refusals(req, settings)) == ["attachments[0].content_type"]


@pytest.mark.parametrize("content_type", ["multipart/mixed", "message/rfc822"])
def test_composite_content_types_are_refused(settings, content_type):
    req = request(attachments=[attachment(content_type=content_type)])
    assert list(refusals(req, settings)) == ["attachments[0].content_type"]


def test_given_content_types_are_lowercased(settings):
    req = request(attachments=[attachment(content_type="application/vnd.ms-Excel")])
    assert validate_send_request(req, settings).attachments[0].content_type == (
        "application/vnd.ms-excel"
    )


def test_an_empty_attachment_is_refused(settings):
    req = request(attachments=[attachment(content=b"")])
    assert list(refusals(req, settings)) == ["attachments[0].content"]


@pytest.mark.parametrize(
    "content_id", ["<logo>", "lo go", "logo\r\n", "lögo", "x" * 256, "a>b", "a\x00"]
)
def test_bad_content_ids_are_refused(settings, content_id):
    req = request(attachments=[attachment(content_id=content_id)])
    assert list(refusals(req, settings)) == ["attachments[0].content_id"]


def test_content_ids_are_unique_ignoring_case(settings):
    req = request(
        attachments=[
            attachment(content_id="logo"),
            attachment(content_id="other"),
            attachment(content_id="LOGO"),
        ]
    )
    problems = refusals(req, settings)
    assert problems == {"attachments[2].content_id": "the same as attachments[0].content_id"}


def test_attachment_count_limit(settings):
    few = settings.model_copy(update={"max_attachments": 2})
    validate_send_request(request(attachments=[attachment(), attachment()]), few)
    assert list(refusals(request(attachments=[attachment()] * 3), few)) == ["attachments"]


def test_attachments_count_towards_the_size_limit(settings):
    small = settings.model_copy(update={"max_email_bytes": 1000})
    # Title (7) + content (4) + 989 bytes: exactly at the limit.
    validate_send_request(request(attachments=[attachment(content=b"x" * 989)]), small)
    req = request(attachments=[attachment(content=b"x" * 500), attachment(content=b"y" * 490)])
    problems = refusals(req, small)
    assert list(problems) == ["attachments"]
    assert "1001 bytes; at most 1000" in problems["attachments"]
    # Bodies that alone are too large name the body, as before.
    req = request(html="h" * 2000, attachments=[attachment()])
    assert list(refusals(req, small)) == ["html"]


def test_the_size_counts_utf8_bytes_of_the_bodies(settings):
    small = settings.model_copy(update={"max_email_bytes": 1000})
    # 400 characters, 800 bytes, plus the title's 7.
    validate_send_request(request(content="é" * 400), small)
    assert list(refusals(request(content="é" * 500), small)) == ["content"]


# Headers


def test_headers_round_trip(settings):
    headers = {
        "X-Campaign": "spring",
        "List-Unsubscribe": "<https://example.com/u/1>",
        "In-Reply-To": "<abc@example.com>",
        "X-Note": "  Grüße aus Köln  ",
    }
    new = validate_send_request(request(headers=headers), settings)
    assert new.headers == {**headers, "X-Note": "Grüße aus Köln"}


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Reply-To",
        "Subject",
        "Message-ID",
        "Date",
        "Sender",
        "Return-Path",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Anything",
        "MIME-Extra",
        "X-Mailroom-Id",
        "Resent-To",
        "Resent-Date",
    ],
)
def test_owned_headers_are_refused(settings, name):
    problems = refusals(request(headers={name: "value"}), settings)
    assert problems == {f'headers["{name}"]': f"{name} is written by the service and cannot be set"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X Space", "v"),
        ("X:Colon", "v"),
        ("X_Under", "v"),
        ("X.Dot", "v"),
        ("$where", "v"),
        ("Ünicode", "v"),
        ("", "v"),
        ("X-" + "a" * 75, "v"),
        ("X-Evil", "v\r\nBcc: evil@example.com"),
        ("X-Evil", "a\u2028b"),
        ("X-Evil", "a\x00b"),
        ("X-Evil", "a\tb"),
        ("X-Empty", ""),
        ("X-Empty", "   "),
        ("X-Long", "v" * 999),
    ],
)
def test_bad_header_names_and_values_are_refused(settings, name, value):
    assert list(refusals(request(headers={name: value}), settings)) == [key_field("headers", name)]


def test_header_limits(settings):
    validate_send_request(request(headers={"X-" + "a" * 74: "v" * 998}), settings)
    many = {f"X-H{i}": "v" for i in range(51)}
    assert list(refusals(request(headers=many), settings)) == ["headers"]
    many.popitem()
    assert len(validate_send_request(request(headers=many), settings).headers) == 50


def test_header_names_differing_in_case_are_one_header(settings):
    problems = refusals(request(headers={"X-A": "1", "x-a": "2"}), settings)
    assert problems == {'headers["x-a"]': 'the same header as headers["X-A"] (names ignore case)'}


def test_key_fields_are_printable_and_short():
    assert key_field("headers", 'a"\n') == 'headers["a\\"\\n"]'
    assert key_field("metadata", "k" * 300) == 'metadata["' + "k" * 80 + '…"]'


# Tags


def test_tags_round_trip_without_duplicates(settings):
    new = validate_send_request(
        request(tags=["welcome", "b2b", "welcome", "a_b-c", "b2b"]), settings
    )
    assert new.tags == ["welcome", "b2b", "a_b-c"]


@pytest.mark.parametrize("tag", ["Bad Tag", "Welcome", "", "a.b", "é", "t" * 65, "a\x00"])
def test_bad_tags_are_refused(settings, tag):
    assert list(refusals(request(tags=["ok", tag]), settings)) == ["tags[1]"]


def test_the_tag_limit_counts_distinct_tags(settings):
    validate_send_request(request(tags=[f"t{i}" for i in range(10)] * 3), settings)
    assert list(refusals(request(tags=[f"t{i}" for i in range(11)]), settings)) == ["tags"]


# Metadata


def test_metadata_round_trips(settings):
    metadata = {"user_id": "42", "Order-Id": "A-7", "note": "Grüße = ok", "empty": ""}
    assert validate_send_request(request(metadata=metadata), settings).metadata == metadata


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("a.b", "v"),
        ("$set", "v"),
        ("a b", "v"),
        ("a=b", "v"),
        ("", "v"),
        ("k" * 257, "v"),
        ("k", "v" * 257),
        ("k", "a\x00b"),
        ("k", "a\nb"),
    ],
)
def test_bad_metadata_is_refused(settings, key, value):
    assert list(refusals(request(metadata={key: value}), settings)) == [key_field("metadata", key)]


def test_metadata_limits(settings):
    validate_send_request(request(metadata={"k" * 256: "v" * 256}), settings)
    pairs = {f"k{i}": "v" for i in range(21)}
    assert list(refusals(request(metadata=pairs), settings)) == ["metadata"]
    pairs.popitem()
    validate_send_request(request(metadata=pairs), settings)


# Together


def test_all_violations_are_reported_together(settings):
    req = request(
        to=["bad"],
        attachments=[attachment(filename="a.exe")],
        headers={"Subject": "x"},
        tags=["Bad Tag"],
        metadata={"a.b": "v"},
    )
    assert list(refusals(req, settings)) == [
        "to[0]",
        "attachments[0].filename",
        'headers["Subject"]',
        "tags[0]",
        'metadata["a.b"]',
    ]


def test_content_type_guessing():
    assert guess_content_type("a.pdf") == "application/pdf"
    assert guess_content_type("A.JPG") == "image/jpeg"
    assert guess_content_type("noext") == "application/octet-stream"
    assert guess_content_type("x.csv") == "text/csv"
