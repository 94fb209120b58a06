"""``mailroom-admin backfill list-buckets``: ListEmails' time buckets for emails stored before them.

Run once after upgrading from a version without ``list_buckets`` (see
:mod:`core.store.backfill`); running it again fills only what a previous run skipped.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from core.settings import Settings
from core.store.backfill import DEFAULT_BATCH_SIZE, backfill_list_buckets


def register(commands: Any) -> None:
    """Add the ``backfill`` command group to the CLI's sub-parsers."""
    backfill = commands.add_parser("backfill", help="fill fields older emails were stored without")
    actions = backfill.add_subparsers(dest="action", required=True)
    buckets = actions.add_parser(
        "list-buckets", help="give emails stored before them ListEmails' time buckets"
    )
    buckets.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="emails read per round trip"
    )
    buckets.add_argument("--json", action="store_true", help="print JSON")
    buckets.set_defaults(run=cmd_backfill_list_buckets)


def cmd_backfill_list_buckets(args: argparse.Namespace, _settings: Settings, out: TextIO) -> int:
    """Fill the buckets; 0 when every email has them now, 1 when some were skipped (run again)."""
    if args.batch_size < 1:
        out.write("--batch-size must be at least 1\n")
        return 2
    result = backfill_list_buckets(batch_size=args.batch_size)
    if args.json:
        json.dump({"filled": result.filled, "skipped": result.skipped}, out)
        out.write("\n")
    else:
        out.write(f"filled {result.filled} emails")
        if result.skipped:
            out.write(f"; {result.skipped} held by another writer: run again later")
        out.write("\n")
    return 1 if result.skipped else 0
