"""``mailroom-admin suppressions``: the suppression list, read and edited in the store.

Usage::

    mailroom-admin suppressions list [--reason R] [--limit N] [--json]
                                                 newest first; R: hard_bounce, complaint,
                                                 manual, unsubscribe
    mailroom-admin suppressions add ADDRESS... [--reason R]
                                                 suppress (default reason: manual)
    mailroom-admin suppressions remove ADDRESS...
                                                 send to these addresses again

Exit status: 0 when every address was handled (an address already suppressed counts), 1 when
one is not a valid address or, for ``remove``, was not suppressed.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from admin.printing import print_rows
from core.addresses import AddressError, parse_address
from core.settings import Settings
from core.store import suppressions as store

#: Entries read per query while listing. Large: FerretDB sorts every entry in memory for each
#: page (measured: 1.3-1.5 s a page with 20,000 entries, whatever the page size).
PAGE_SIZE = 5000


def register(commands: Any) -> None:
    """Add the ``suppressions`` command group to the CLI's sub-parsers."""
    group = commands.add_parser("suppressions", help="list, add or remove suppressed addresses")
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="suppressed addresses, newest first")
    listing.add_argument("--reason", choices=store.REASONS, help="only this reason")
    listing.add_argument("--limit", type=int, default=0, help="at most N (default: all)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=cmd_list)
    add = actions.add_parser("add", help="suppress addresses")
    add.add_argument("addresses", nargs="+", metavar="ADDRESS")
    add.add_argument("--reason", choices=store.REASONS, default=store.MANUAL)
    add.set_defaults(run=cmd_add)
    remove = actions.add_parser("remove", help="remove addresses from the list")
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS")
    remove.set_defaults(run=cmd_remove)


def _row(entry: store.Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "reason": entry.reason,
        "provider": entry.provider or "",
        "event_id": entry.event_id or "",
        "created_at": entry.created_at.isoformat() + "Z",
    }


def cmd_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print the list page by page (a table, or one JSON array)."""
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        size = PAGE_SIZE if not args.limit else min(PAGE_SIZE, args.limit - len(rows))
        entries, token = store.list_suppressions(
            reason=args.reason, page_size=size, page_token=token
        )
        rows += [_row(e) for e in entries]
        if not token or (args.limit and len(rows) >= args.limit):
            break
    columns = ["address", "reason", "provider", "event_id", "created_at"]
    return print_rows(rows, columns, out, as_json=args.json, empty="no suppressed addresses")


def _addr_spec(value: str, out: TextIO) -> str | None:
    try:
        return parse_address(value).addr_spec
    except AddressError as exc:
        out.write(f"{value}: not a valid address: {exc}\n")
        return None


def cmd_add(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Suppress each address; 1 when one is not a valid address."""
    status = 0
    for value in args.addresses:
        address = _addr_spec(value, out)
        if address is None:
            status = 1
            continue
        added = store.suppress(address, args.reason)
        out.write(
            f"{store.suppression_key(address)}: {'added' if added else 'already suppressed'}\n"
        )
    return status


def cmd_remove(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Remove each address; 1 when one is invalid or was not suppressed.

    An entry a provider event added with an address the API's rules refuse is removable too.
    """
    status = 0
    for value in args.addresses:
        if store.get_suppression(value) is not None:
            address: str | None = value
        else:
            address = _addr_spec(value, out)
        if address is None:
            status = 1
            continue
        key = store.suppression_key(address)
        if store.unsuppress(address):
            out.write(f"{key}: removed\n")
        else:
            out.write(f"{key}: not suppressed\n")
            status = 1
    return status
