"""Attachments, headers, tags and metadata in the SDK: the models and their protobuf form."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from mailroom import Attachment, Email, EmailStatus, OutgoingEmail
from mailroom._convert import build_send_request, email_from_proto
from mailroom.client import MailroomClient
from mailroom.v1 import mail_pb2


def test_an_attachment_knows_its_size_and_keeps_bytes():
    attachment = Attachment("report.csv", bytearray(b"a,b\n1,2\n"), content_type="text/csv")
    assert attachment.content == b"a,b\n1,2\n"
    assert type(attachment.content) is bytes
    assert attachment.size == 8
    assert (attachment.content_type, attachment.content_id) == ("text/csv", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        attachment.filename = "other.csv"  # type: ignore[misc]


def test_text_content_is_refused_rather_than_encoded_by_guess():
    with pytest.raises(TypeError, match="encode"):
        Attachment("note.txt", "hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        Attachment("note.txt", 42)  # type: ignore[arg-type]


def test_the_content_is_kept_out_of_the_repr():
    assert "secret" not in repr(Attachment("a.txt", b"secret"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("invoice.pdf", "application/pdf"),
        ("photo.PNG", "image/png"),
        ("notes.txt", "text/plain"),
        ("backup.tar.gz", "application/gzip"),
        ("data.unknownext", "application/octet-stream"),
        ("README", "application/octet-stream"),
    ],
)
def test_from_path_reads_the_file_and_guesses_its_type(tmp_path, name, expected):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01payload")
    attachment = Attachment.from_path(path)
    assert attachment.filename == name
    assert attachment.content == b"\x00\x01payload"
    assert attachment.size == 9
    assert attachment.content_type == expected
    assert attachment.content_id == ""


def test_from_path_takes_a_shown_name_a_type_and_a_content_id(tmp_path):
    path = tmp_path / "tmp123"
    path.write_bytes(b"GIF89a")
    attachment = Attachment.from_path(str(path), filename="logo.gif", content_id="logo")
    assert (attachment.filename, attachment.content_type) == ("logo.gif", "image/gif")
    assert attachment.content_id == "logo"
    forced = Attachment.from_path(path, content_type="image/x-custom")
    assert (forced.filename, forced.content_type) == ("tmp123", "image/x-custom")


def test_from_path_of_a_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        Attachment.from_path(tmp_path / "missing.pdf")


def test_attachments_headers_tags_and_metadata_land_in_their_fields():
    request = build_send_request(
        "a@example.com",
        "t",
        "c",
        attachments=[
            Attachment("a.pdf", b"%PDF", content_type="application/pdf"),
            Attachment("logo.png", b"\x89PNG", content_id="logo"),
        ],
        headers={"X-Campaign": "spring"},
        tags=("welcome", "onboarding"),
        metadata={"user_id": "42"},
    )
    assert [(a.filename, a.content_type, a.content, a.content_id) for a in request.attachments] == [
        ("a.pdf", "application/pdf", b"%PDF", ""),
        ("logo.png", "", b"\x89PNG", "logo"),
    ]
    assert all(a.size == 0 for a in request.attachments)  # output only: never sent
    assert dict(request.headers) == {"X-Campaign": "spring"}
    assert list(request.tags) == ["welcome", "onboarding"]
    assert dict(request.metadata) == {"user_id": "42"}


def test_a_single_tag_string_is_one_tag():
    assert list(build_send_request("a@example.com", "t", "c", tags="welcome").tags) == ["welcome"]


def test_something_other_than_an_attachment_is_refused_before_sending():
    with pytest.raises(TypeError, match=r"Attachment\.from_path"):
        build_send_request("a@example.com", "t", "c", attachments=["invoice.pdf"])  # type: ignore[list-item]


def test_the_new_email_fields_convert():
    purged = datetime(2030, 2, 1, tzinfo=UTC)
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(purged)
    email = email_from_proto(
        mail_pb2.Email(
            id="e-1",
            attachments=[
                mail_pb2.Attachment(
                    filename="a.pdf", content_type="application/pdf", content=b"%PDF", size=4
                ),
                # The listing's basic view leaves the content out but keeps the size.
                mail_pb2.Attachment(filename="big.zip", content_type="application/zip", size=5000),
            ],
            headers={"X-Campaign": "spring"},
            tags=["welcome"],
            metadata={"user_id": "42"},
            purge_time=timestamp,
        )
    )
    assert email.attachments == [
        Attachment("a.pdf", b"%PDF", content_type="application/pdf", size=4),
        Attachment("big.zip", b"", content_type="application/zip", size=5000),
    ]
    assert email.headers == {"X-Campaign": "spring"}
    assert email.tags == ["welcome"]
    assert email.metadata == {"user_id": "42"}
    assert email.purge_time == purged


def test_an_email_without_the_new_fields_has_empty_ones():
    email = email_from_proto(mail_pb2.Email(id="e-2"))
    assert (email.attachments, email.headers, email.tags, email.metadata) == ([], {}, [], {})
    assert email.purge_time is None


def test_every_attachment_field_is_converted():
    proto_fields = {f.name for f in mail_pb2.Attachment.DESCRIPTOR.fields}
    assert proto_fields == {f.name for f in dataclasses.fields(Attachment)}


def test_an_outgoing_email_has_every_argument_of_send_email():
    """A batch item takes what send_email takes (and lands in the same request fields)."""
    arguments = set(inspect.signature(MailroomClient.send_email).parameters) - {"self", "timeout"}
    assert {f.name for f in dataclasses.fields(OutgoingEmail)} == arguments
    request_fields = {f.name for f in mail_pb2.SendEmailRequest.DESCRIPTOR.fields}
    assert {"from_address" if a == "from_" else a for a in arguments} == request_fields


def test_the_email_dataclass_fields_have_defaults_so_old_code_keeps_working():
    email = Email(id="e", status=EmailStatus.QUEUED, to=[], cc=[], bcc=[], title="", content="")
    assert (email.attachments, email.headers, email.tags, email.metadata) == ([], {}, [], {})
