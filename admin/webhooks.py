"""``mailroom-admin webhooks``: subscriptions and their deliveries, read and edited in the store.

Usage::

    mailroom-admin webhooks list [--json]        every subscription (never its secret)
    mailroom-admin webhooks create URL [--event TYPE]... [--final-outcomes-only]
                                   [--description TEXT]
                                                 prints the new id and its secret (shown once)
    mailroom-admin webhooks delete ID...
    mailroom-admin webhooks deliveries list [--state pending|delivered|dead] [--webhook ID]
                                   [--email ID] [--limit N] [--json]
                                                 newest first, with attempts and last error
    mailroom-admin webhooks deliveries replay ID... | --all-dead
                                                 dead deliveries sent again, fresh budget

Exit status: 0 when every item was handled, 1 when one was not (unknown id, not dead), 2 on a
usage error (an invalid URL or event type names the field).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from admin.printing import print_rows
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.settings import Settings
from core.store import webhook_outbox as outbox
from core.store import webhooks as store
from server.webhooks import check_webhook, replay_delivery

# Last errors can be long; a table row shows this much.
ERROR_COLUMN = 50


def register(commands: Any) -> None:
    """Add the ``webhooks`` command group to the CLI's sub-parsers."""
    group = commands.add_parser("webhooks", help="outbound webhooks and their deliveries")
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every subscription")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=cmd_list)
    create = actions.add_parser("create", help="subscribe a URL; prints its secret once")
    create.add_argument("url")
    create.add_argument(
        "--event", action="append", default=[], metavar="TYPE", help="repeat; default: all"
    )
    create.add_argument("--final-outcomes-only", action="store_true")
    create.add_argument("--description", default="")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=cmd_create)
    delete = actions.add_parser("delete", help="delete subscriptions")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.set_defaults(run=cmd_delete)

    deliveries = actions.add_parser("deliveries", help="list or replay deliveries")
    delivery_actions = deliveries.add_subparsers(dest="delivery_action", required=True)
    dlist = delivery_actions.add_parser("list", help="deliveries, newest first")
    dlist.add_argument("--state", choices=[s.value for s in store.DeliveryState])
    dlist.add_argument("--webhook", metavar="ID")
    dlist.add_argument("--email", metavar="ID")
    dlist.add_argument("--limit", type=int, default=50)
    dlist.add_argument("--json", action="store_true", help="print JSON")
    dlist.set_defaults(run=cmd_deliveries_list)
    replay = delivery_actions.add_parser("replay", help="send dead deliveries again")
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--all-dead", action="store_true", help="every dead delivery")
    replay.set_defaults(run=cmd_replay)


def _iso(value: Any) -> str:
    return value.isoformat() + "Z" if value is not None else ""


def _sub_row(sub: store.WebhookSubscription) -> dict[str, Any]:
    return {
        "id": str(sub.id),
        "url": sub.url,
        "event_types": list(sub.event_types or []),
        "final_outcomes_only": bool(sub.final_outcomes_only),
        "description": sub.description or "",
        "created_at": _iso(sub.created_at),
    }


def cmd_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print every subscription."""
    rows = [_sub_row(s) for s in store.list_subscriptions()]

    def for_table(row: dict[str, Any]) -> None:
        row["events"] = ",".join(row["event_types"]) or "all"
        row["final_only"] = "yes" if row["final_outcomes_only"] else "no"

    columns = ["id", "url", "events", "final_only", "created_at"]
    return print_rows(
        rows, columns, out, as_json=args.json, empty="no webhooks", for_table=for_table
    )


def cmd_create(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Validate and store a subscription; print it with its secret."""
    try:
        wanted = check_webhook(args.url, args.event, args.description)
    except InvalidArgument as exc:
        for violation in exc.violations:
            out.write(f"{violation.field}: {violation.description}\n")
        return 2
    sub = store.create_subscription(
        args.url,
        wanted,
        final_outcomes_only=args.final_outcomes_only,
        description=args.description,
    )
    if args.json:
        out.write(json.dumps({**_sub_row(sub), "secret": sub.secret}, indent=2) + "\n")
    else:
        out.write(f"webhook {sub.id} created\nsecret: {sub.secret}  (shown only now)\n")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Delete each subscription; 1 when one does not exist."""
    status = 0
    for webhook_id in args.ids:
        try:
            deleted = store.delete_subscription(webhook_id)
        except NotFound:
            deleted = False
        out.write(f"{webhook_id}: {'deleted' if deleted else 'no such webhook'}\n")
        status = status or (0 if deleted else 1)
    return status


def _delivery_row(delivery: store.WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.key,
        "webhook_id": delivery.subscription_id,
        "email_id": delivery.email_id or "",
        "event_type": delivery.event_type,
        "state": delivery.state,
        "attempts": int(delivery.attempt_count or 0),
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "last_error": delivery.last_error or "",
        "created_at": _iso(delivery.created_at),
        "history": [
            {"at": _iso(a.at), "status_code": a.status_code, "error": a.error}
            for a in delivery.attempts
        ],
    }


def cmd_deliveries_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print deliveries, newest first."""
    found = outbox.list_deliveries(
        state=args.state, subscription_id=args.webhook, email_id=args.email, limit=args.limit
    )
    rows = [_delivery_row(d) for d in found]

    def for_table(row: dict[str, Any]) -> None:
        row["last_error"] = row["last_error"][:ERROR_COLUMN]

    columns = ["id", "event_type", "email_id", "state", "attempts", "last_error"]
    return print_rows(
        rows, columns, out, as_json=args.json, empty="no deliveries", for_table=for_table
    )


def cmd_replay(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Replay each dead delivery (or all); 1 when one could not be replayed."""
    ids = list(args.ids)
    if args.all_dead:
        ids += [d.key for d in outbox.list_deliveries(state=store.DeliveryState.DEAD, limit=10**6)]
    if not ids:
        out.write("nothing to replay: name delivery ids or pass --all-dead\n")
        return 2
    status = 0
    for delivery_id in ids:
        try:
            replay_delivery(delivery_id)
        except (NotFound, FailedPrecondition) as exc:
            out.write(f"{delivery_id}: {exc.message}\n")
            status = 1
            continue
        out.write(f"{delivery_id}: replayed\n")
    return status
