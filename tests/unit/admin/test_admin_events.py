"""``mailroom-admin events ingest-dsn`` against mongomock."""

from __future__ import annotations

import io
import json
from datetime import datetime

from bson import ObjectId
from provider_samples import dsn

from admin.cli import build_parser
from core.settings import Settings
from core.store.documents import Email, Status
from core.store.repository import NewEmail, new_email_document
from core.store.suppressions import suppressed_among


def run(settings: Settings, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["events", *argv])
    out = io.StringIO()
    return int(args.run(args, settings, out)), out.getvalue()


def test_a_dsn_file_bounces_its_email_once_and_suppresses(fake_store, settings, tmp_path) -> None:
    new = NewEmail(to=["gone@example.net"], subject="s", text="t", from_address="me@example.com")
    oid = ObjectId()
    doc = new_email_document(new, message_id_domain="m.test", email_id=oid, now=datetime.now())
    doc["status"] = Status.SENT.value
    Email._get_collection().insert_one(doc)
    report = tmp_path / "bounce.eml"
    report.write_bytes(dsn(doc["message_id"], "gone@example.net"))
    status, text = run(settings, "ingest-dsn", str(report))
    assert status == 0 and f"gone@example.net: BOUNCED (hard) 5.1.1 -> {oid}" in text
    assert Email.objects.get(id=oid).status == Status.BOUNCED
    assert suppressed_among(["gone@example.net"]) == {"gone@example.net": "hard_bounce"}
    status, text = run(settings, "ingest-dsn", "--json", str(report))
    assert status == 0 and json.loads(text)[0]["duplicate"] is True


def test_a_file_that_is_not_a_dsn_fails_the_command(fake_store, settings, tmp_path) -> None:
    plain = tmp_path / "plain.eml"
    plain.write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    status, text = run(settings, "ingest-dsn", str(plain), str(tmp_path / "missing.eml"))
    assert status == 1
    assert "plain.eml: not ingested: no message/delivery-status part" in text
    assert "missing.eml: not ingested" in text
