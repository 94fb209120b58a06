"""``mailroom-admin events ingest-dsn FILE...``: SMTP bounces (RFC 3464 DSNs) into the events.

Each file is one DSN message (as saved from the bounce mailbox, e.g. an ``.eml``); its events go
through the same intake as the providers' webhooks (stored once, suppression, outbound
webhooks), so ingesting a file twice records it once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from core.dsn import NotADsn, parse_dsn
from core.inbound_events import ingest
from core.settings import Settings


def register(commands: Any) -> None:
    """Add the ``events`` command group to the CLI's sub-parsers."""
    events = commands.add_parser("events", help="take in provider events from files")
    actions = events.add_subparsers(dest="action", required=True)
    dsn = actions.add_parser(
        "ingest-dsn", help="record SMTP bounces: RFC 3464 delivery status notifications"
    )
    dsn.add_argument("files", nargs="+", metavar="FILE", type=Path)
    dsn.add_argument("--json", action="store_true", help="print JSON")
    dsn.set_defaults(run=cmd_ingest_dsn)


def cmd_ingest_dsn(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Ingest each DSN file; 1 when any could not be read or is not a DSN."""
    rows: list[dict[str, Any]] = []
    status = 0
    for path in args.files:
        try:
            events = parse_dsn(path.read_bytes())
        except (OSError, NotADsn) as exc:
            rows.append({"file": str(path), "error": str(exc)})
            status = 1
            continue
        for recorded in ingest(events):
            rows.append(
                {
                    "file": str(path),
                    "recipient": recorded.event.recipient,
                    "type": recorded.event.type.value,
                    "bounce_type": recorded.event.bounce_type,
                    "diagnostic_code": recorded.event.diagnostic_code,
                    "email_id": recorded.email_id,
                    "duplicate": recorded.duplicate,
                }
            )
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return status
    for row in rows:
        if "error" in row:
            out.write(f"{row['file']}: not ingested: {row['error']}\n")
            continue
        what = row["type"] + (f" ({row['bounce_type']})" if row["bounce_type"] else "")
        email = row["email_id"] or "no matching email"
        note = ", already recorded" if row["duplicate"] else ""
        out.write(f"{row['file']}: {row['recipient']}: {what} {row['diagnostic_code']} ")
        out.write(f"-> {email}{note}\n")
    return status
