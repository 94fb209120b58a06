"""Providers' event payloads (shapes from their public docs) and signers with local keys.

Shared by the unit tests of server/provider_events and the end-to-end tests through Envoy.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

# --- SendGrid ---------------------------------------------------------------------------------


@dataclass
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def new(cls) -> SendGridSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> str:
        """The "verification key" as SendGrid shows it: base64 DER."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_events(x_message_id: str, email: str, *, prefix: str = "sg") -> list[dict[str, Any]]:
    """A batch as SendGrid's Event Webhook posts it (its docs' sample events)."""
    sg_message_id = f"{x_message_id}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
    common = {
        "email": email,
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "sg_message_id": sg_message_id,
        "category": "cat facts",
    }
    return [
        {**common, "event": "processed", "sg_event_id": f"{prefix}-processed"},
        {
            **common,
            "event": "delivered",
            "response": "250 OK",
            "sg_event_id": f"{prefix}-delivered",
        },
        {
            **common,
            "event": "bounce",
            "type": "bounce",
            "status": "5.0.0",
            "reason": "500 unknown recipient",
            "bounce_classification": "Invalid Address",
            "sg_event_id": f"{prefix}-bounce",
        },
        {
            **common,
            "event": "group_resubscribe_v2",
            "sg_event_id": f"{prefix}-future",
        },
    ]


# --- Mailgun ----------------------------------------------------------------------------------

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def mailgun_body(
    event_data: dict[str, Any], key: str = MAILGUN_KEY, *, token: str = "a8ce0edb2dd8301dee6c2405"
) -> bytes:
    timestamp = str(int(time.time()))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
    ).encode()


def mailgun_failed(message_id: str, recipient: str, *, event_id: str = "G9Bn5sl1TC6nu79C8C0bwg"):
    """A permanent failure, as Mailgun's webhook docs show it."""
    return {
        "id": event_id,
        "timestamp": 1521233195.375624,
        "log-level": "error",
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "envelope": {"sender": "bob@sandbox.mailgun.org", "transport": "smtp"},
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        "delivery-status": {
            "attempt-no": 1,
            "message": "",
            "code": 605,
            "enhanced-code": "5.1.1",
            "description": "Not delivering to previously bounced address",
            "session-seconds": 0.0,
        },
        "message": {
            "headers": {
                "to": recipient,
                "message-id": message_id,
                "from": "Bob <bob@sandbox.mailgun.org>",
                "subject": "Test permanent_fail webhook",
            },
            "attachments": [],
            "size": 111,
        },
        "recipient": recipient,
        "recipient-domain": recipient.split("@")[-1],
        "storage": {"url": "https://se.api.mailgun.net/v3/domains/x/messages/y", "key": "y"},
        "campaigns": [],
        "tags": ["my_tag_1"],
        "user-variables": {"my_var_1": "Mailgun Variable #1"},
    }


def mailgun_opened(message_id: str, recipient: str, *, event_id: str = "Ase7i2zsRYeDXztHGENqRA"):
    return {
        "id": event_id,
        "timestamp": 1529006854.329574,
        "log-level": "info",
        "event": "opened",
        "message": {"headers": {"message-id": message_id}},
        "recipient": recipient,
        "recipient-domain": recipient.split("@")[-1],
        "ip": "50.56.129.169",
        "geolocation": {"country": "US", "region": "CA", "city": "San Francisco"},
        "client-info": {"client-os": "Linux", "device-type": "desktop", "client-type": "browser"},
        "tags": ["my_tag_1"],
    }


# --- Postmark ---------------------------------------------------------------------------------

POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "s3cr3t-hook-pass"


def postmark_auth(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def postmark_delivery(message_id: str, recipient: str) -> dict[str, Any]:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": message_id,
        "Recipient": recipient,
        "Tag": "welcome-email",
        "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
        "Details": "Test delivery webhook details",
        "Metadata": {"a_key": "a_value"},
    }


def postmark_bounce(message_id: str, recipient: str, *, bounce_id: int = 4323372036854775807):
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": bounce_id,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "Test",
        "MessageID": message_id,
        "Metadata": {"a_key": "a_value"},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": recipient,
        "From": "sender@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Test subject",
        "Content": "<Full dump of bounce>",
    }


# --- Amazon SES through SNS -------------------------------------------------------------------


@dataclass
class SnsSigner:
    key: rsa.RSAPrivateKey
    cert_pem: bytes
    cert_url: str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"

    @classmethod
    def new(cls) -> SnsSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        fields = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if message["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        text = "".join(f"{n}\n{message[n]}\n" for n in fields if message.get(n) is not None)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }


TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"


def sns_notification(ses: dict[str, Any], *, message_id: str) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(ses),
        "Timestamp": "2016-01-27T14:59:38.237Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }


def sns_confirmation(subscribe_url: str) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2012-04-26T20:45:04.751Z",
    }


def _mail(ses_message_id: str, recipient: str, our_message_id: str) -> dict[str, Any]:
    return {
        "timestamp": "2016-01-27T14:59:38.237Z",
        "messageId": ses_message_id,
        "source": "john@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
        "sendingAccountId": "123456789012",
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": our_message_id}],
        "commonHeaders": {"from": ["john@example.com"], "to": [recipient], "subject": "Hello"},
    }


def _notification(
    kind: str, detail: dict[str, Any], ses_message_id: str, recipient: str, our_message_id: str
) -> dict[str, Any]:
    """An SES notification: its type, the details under the type's lowercase name, the mail."""
    return {
        "notificationType": kind,
        kind.lower(): detail,
        "mail": _mail(ses_message_id, recipient, our_message_id),
    }


def ses_bounce(ses_message_id: str, recipient: str, our_message_id: str = "") -> dict[str, Any]:
    return _notification(
        "Bounce",
        {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2016-01-27T14:59:38.237Z",
            "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        ses_message_id,
        recipient,
        our_message_id,
    )


def ses_delivery(ses_message_id: str, recipient: str, our_message_id: str = "") -> dict[str, Any]:
    return _notification(
        "Delivery",
        {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "processingTimeMillis": 546,
            "recipients": [recipient],
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "remoteMtaIp": "127.0.2.0",
        },
        ses_message_id,
        recipient,
        our_message_id,
    )


def ses_complaint(ses_message_id: str, recipient: str, our_message_id: str = "") -> dict[str, Any]:
    return _notification(
        "Complaint",
        {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": recipient}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2016-01-27T14:59:38.237Z",
            "timestamp": "2016-01-27T14:59:38.237Z",
            "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
        },
        ses_message_id,
        recipient,
        our_message_id,
    )


# --- SMTP DSN (RFC 3464) ----------------------------------------------------------------------


def dsn(original_message_id: str, recipient: str, *, status: str = "5.1.1") -> bytes:
    """A bounce as Postfix writes it (RFC 3464, abridged)."""
    action = "failed" if status.startswith("5") else "delayed"
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        "To: mailroom@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Wed, 02 Dec 2026 21:00:00 +0000 (UTC)\r\n"
        "Message-ID: <20261202210000.ABC123@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\r\n'
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "X-Postfix-Queue-ID: ABC123\r\n"
        "Arrival-Date: Wed, 02 Dec 2026 20:59:58 +0000 (UTC)\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mail.example.net\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected\r\n"
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        "From: Mailroom <mailroom@example.com>\r\n"
        f"To: {recipient}\r\n"
        "Subject: hi\r\n"
        f"Message-ID: {original_message_id}\r\n"
        "\r\n"
        "--BOUND--\r\n"
    ).encode()
