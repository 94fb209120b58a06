"""Attachments, inline images and extra headers end to end: REST (Envoy) and gRPC → worker → SMTP.

What a recipient's mail client gets: the files with their names and exact bytes, the inline
image next to the HTML that shows it (``cid:``), and the client's extra header.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage

from helpers import wait_until
from mailroom.v1 import mail_pb2

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64  # every byte value, 16 kB
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff\r\n" * 500


def received_for(sink, email_id: str) -> EmailMessage:
    """The one message the sink received for ``email_id``, parsed."""

    def find() -> EmailMessage | None:
        found = [m for m in sink.messages if m.message["X-Mailroom-Id"] == email_id]
        return found[0].message if found else None

    return wait_until(find, timeout=60, interval=0.1, message=f"{email_id} reaches the sink")


def parts_by_type(message: EmailMessage) -> dict[str, EmailMessage]:
    return {part.get_content_type(): part for part in message.walk()}


def test_rest_email_with_a_file_and_an_inline_image_is_delivered(
    envoy, worker, smtp_sink, mail_client
):
    body = {
        "to": ["alice@example.com"],
        "title": "Your invoice",
        "content": "Your invoice is attached.",
        "html": '<p><img src="cid:logo@shop"> Your invoice is attached.</p>',
        "attachments": [
            {
                "filename": "invoice-42.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(PDF).decode(),
            },
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content": base64.b64encode(PNG).decode(),
                "content_id": "logo@shop",
            },
        ],
        "headers": {"List-Unsubscribe": "<https://shop.example/unsubscribe/42>"},
        "tags": ["invoice"],
        "metadata": {"order_id": "42"},
    }
    status, _, reply = envoy.request("POST", "/api/email", body)
    assert status == 201, reply
    email_id = reply["id"]

    message = received_for(smtp_sink, email_id)

    assert message["List-Unsubscribe"] == "<https://shop.example/unsubscribe/42>"
    html = message.get_body(("html",))
    assert html is not None and 'src="cid:logo@shop"' in html.get_content()
    parts = parts_by_type(message)
    invoice, logo = parts["application/pdf"], parts["image/png"]
    assert invoice.get_content_disposition() == "attachment"
    assert (invoice.get_filename(), invoice.get_content()) == ("invoice-42.pdf", PDF)
    assert logo.get_content_disposition() == "inline"
    assert logo["Content-ID"] == "<logo@shop>"
    assert logo.get_content() == PNG
    # The image is shown with the HTML, not offered as a separate download.
    assert logo in parts["multipart/related"].iter_parts()

    def sent() -> bool:
        email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=5).email
        return email.status == mail_pb2.EMAIL_STATUS_SENT

    wait_until(sent, timeout=60, interval=0.1, message=f"{email_id} is SENT")


def test_grpc_email_with_a_non_ascii_file_name_is_delivered(mail_client, worker, smtp_sink):
    reply = mail_client.SendEmail(
        mail_pb2.SendEmailRequest(
            to=["bob@example.com"],
            title="Contrat",
            content="Voici le contrat.",
            attachments=[
                mail_pb2.Attachment(
                    filename="contrat signé 2026 (日本).pdf",
                    content_type="application/pdf",
                    content=PDF,
                )
            ],
            headers={"X-Dossier": "Société Générale №7"},
        ),
        timeout=10,
    )

    message = received_for(smtp_sink, reply.id)

    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(("plain",)).get_content().strip() == "Voici le contrat."
    [contract] = message.iter_attachments()
    assert contract.get_filename() == "contrat signé 2026 (日本).pdf"
    assert contract.get_content() == PDF
    assert message["X-Dossier"] == "Société Générale №7"
