"""``mailroom-admin``: provider breakers; dead letters, listed and replayed; the retention job.

Usage::

    mailroom-admin providers [--json]            each provider: enabled, priority, breaker state,
                                                 failures, seconds to half-open (shared Redis)
    mailroom-admin providers reset NAME...       close a breaker, back into rotation
    mailroom-admin dead-letters list [--include-replayed] [--limit N] [--json]
    mailroom-admin dead-letters replay ID... | --all
    mailroom-admin retention run [--days N] [--json]
                                                 purge the content of final emails older than
                                                 N days (default MAILROOM_RETENTION_DAYS)
    mailroom-admin suppressions list|add|remove  the suppression list (admin/suppressions.py)
    mailroom-admin webhooks list|create|delete|deliveries list|deliveries replay
                                                 outbound webhooks (admin/webhooks.py)
    mailroom-admin events ingest-dsn FILE...     SMTP bounces (RFC 3464 DSNs) as events
                                                 (admin/events.py)

Reads the same ``MAILROOM_*`` settings as the workers. Exit status: 0 on success, 1 when a
backing service is unreachable or some item could not be handled, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import redis

from admin import backfill, events, suppressions, webhooks
from core.errors import FailedPrecondition, NotFound, QueueUnavailable, StorageUnavailable
from core.logs import configure_logging
from core.queue import DeliveryQueue
from core.redis_errors import map_redis_errors
from core.settings import Settings, get_settings
from core.store.connection import connect
from workers.breaker_state import STATE_OPEN, RedisState, connect_redis
from workers.breakers import BreakerBoard
from workers.mta.registry import build_providers, close_providers
from workers.retention import run_retention
from workers.store import dead_letters
from workers.strategy import Strategy

# Last errors can be long provider responses; a table row shows this much.
ERROR_COLUMN = 60


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _redis(settings: Settings) -> redis.Redis:
    client = connect_redis(settings)
    with map_redis_errors(f"Redis at {settings.redis_url} is unreachable"):
        client.ping()
    return client


def provider_rows(settings: Settings) -> list[dict[str, Any]]:
    """Describe every known provider and its shared breaker state.

    Args:
        settings: Provider credentials and order, Redis URL, breaker thresholds.

    Returns:
        One dict per provider (see ``mailroom-admin providers --json``).

    Raises:
        QueueUnavailable: Redis is unreachable.
    """
    providers, infos = build_providers(settings)
    try:
        client = _redis(settings)
        board = BreakerBoard.from_settings(providers, settings, RedisState(client))
        statuses = board.statuses()
        client.close()
    finally:
        close_providers(providers)
    strategy = Strategy.build(settings.provider_order, providers)
    priorities = {name: index + 1 for index, group in enumerate(strategy.groups) for name in group}
    rows = []
    for info in infos:
        status = statuses.get(info.name)
        rows.append(
            {
                "name": info.name,
                "enabled": info.enabled,
                "reason": info.reason,
                "priority": priorities.get(info.name),
                "weight": settings.provider_weights.get(info.name, 1.0),
                "state": status.state if status else None,
                "fail_counter": status.fail_counter if status else None,
                "fail_max": status.fail_max if status else None,
                "seconds_to_half_open": (round(status.seconds_to_half_open, 1) if status else None),
                "probing": status.probing if status else False,
                "out_of_rotation": status.out_of_rotation if status else "",
                "seconds_out_of_rotation": (
                    round(status.seconds_out_of_rotation, 1) if status else None
                ),
            }
        )
    return rows


def cmd_providers(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """List providers, or reset the breakers named."""
    if args.action == "reset":
        return cmd_providers_reset(args.names, settings, out)
    rows = provider_rows(settings)
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    table = [["PROVIDER", "ENABLED", "PRIORITY", "BREAKER", "FAILURES", "HALF-OPEN IN", "NOTE"]]
    for row in rows:
        if not row["enabled"]:
            table.append([row["name"], "no", "-", "-", "-", "-", row["reason"]])
            continue
        note = ""
        if row["out_of_rotation"]:
            note = (
                f"out of rotation for {row['seconds_out_of_rotation']:.0f}s: "
                f"{row['out_of_rotation']}"
            )
        elif row["probing"]:
            note = "probe in flight"
        elif row["priority"] is None:
            note = "not in provider_order: never used"
        table.append(
            [
                row["name"],
                "yes",
                str(row["priority"] or "-"),
                row["state"],
                f"{row['fail_counter']}/{row['fail_max']}",
                f"{row['seconds_to_half_open']:.1f}s" if row["state"] == STATE_OPEN else "-",
                note,
            ]
        )
    _table(table, out)
    return 0


def cmd_providers_reset(names: list[str], settings: Settings, out: TextIO) -> int:
    """Close the named providers' breakers and put them back into rotation."""
    client = _redis(settings)
    board = BreakerBoard.from_settings(names, settings, RedisState(client))
    for name in names:
        board[name].reset()
        out.write(f"{name}: breaker closed, in rotation\n")
    client.close()
    return 0


def cmd_dead_letters_list(args: argparse.Namespace, out: TextIO) -> int:
    """List dead letters, most recent first."""
    records = dead_letters.list_dead_letters(
        include_replayed=args.include_replayed, limit=args.limit
    )
    if args.json:
        json.dump(
            [
                {
                    "id": record.email_id,
                    "failed_at": record.failed_at.isoformat() + "Z",
                    "attempts": len(record.attempts),
                    "retries": record.retries,
                    "last_error": record.last_error,
                    "replayed_at": (
                        record.replayed_at.isoformat() + "Z" if record.replayed_at else None
                    ),
                }
                for record in records
            ],
            out,
            indent=2,
        )
        out.write("\n")
        return 0
    if not records:
        out.write("no dead letters\n")
        return 0
    table = [["ID", "FAILED AT (UTC)", "ATTEMPTS", "REPLAYED AT", "LAST ERROR"]]
    for record in records:
        error = " ".join(record.last_error.split())
        if len(error) > ERROR_COLUMN:
            error = error[: ERROR_COLUMN - 1] + "…"
        table.append(
            [
                record.email_id,
                record.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(len(record.attempts)),
                record.replayed_at.strftime("%Y-%m-%d %H:%M:%S") if record.replayed_at else "-",
                error,
            ]
        )
    _table(table, out)
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Put dead-lettered emails back as QUEUED and enqueue them."""
    if args.all:
        ids = [record.email_id for record in dead_letters.list_dead_letters()]
    else:
        ids = list(dict.fromkeys(args.ids))
    if not ids:
        out.write("nothing to replay\n")
        return 0
    queue = DeliveryQueue(
        settings.redis_url, settings.queue_name, timeout_seconds=settings.redis_timeout_seconds
    )
    failures = 0
    try:
        for email_id in ids:
            try:
                email = dead_letters.replay(email_id)
            except (NotFound, FailedPrecondition) as exc:
                if args.all:
                    # Not a failure of --all: a letter purged by retention (or gone meanwhile)
                    # has nothing left to replay; the ones that can be are.
                    out.write(f"{email_id}: skipped: {exc}\n")
                    continue
                out.write(f"{email_id}: {exc}\n")
                failures += 1
                continue
            if email is None:
                out.write(f"{email_id}: not FAILED any more, skipped\n")
                continue
            try:
                queue.enqueue_delivery(email_id)
            except QueueUnavailable as exc:
                # The email is QUEUED in MongoDB: the periodic rescan enqueues it later.
                out.write(f"{email_id}: QUEUED, not enqueued ({exc}); the rescan will\n")
                failures += 1
                continue
            out.write(f"{email_id}: replayed, QUEUED\n")
    finally:
        queue.close()
    return 1 if failures else 0


def cmd_retention_run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Run the retention job now, as the scheduler does (under its lock)."""
    client = _redis(settings)
    try:
        result = run_retention(settings, client, days=args.days)
    finally:
        client.close()
    if args.json:
        json.dump(result.as_dict(), out)
        out.write("\n")
    else:
        out.write(result.summary().removeprefix("retention: ") + "\n")
    return 1 if result.lock_busy or result.aborted else 0


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 days, not {text}")
    return days


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="mailroom-admin",
        description="Mailroom operations: providers, dead letters, retention.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    providers = commands.add_parser(
        "providers", help="list providers with their circuit breakers, or reset breakers"
    )
    providers.add_argument("--json", action="store_true", help="print JSON")
    provider_actions = providers.add_subparsers(dest="action")
    reset = provider_actions.add_parser(
        "reset", help="close the breakers of NAME... and put them back into rotation"
    )
    reset.add_argument("names", nargs="+", metavar="NAME")

    letters = commands.add_parser("dead-letters", help="list or replay dead letters")
    letter_actions = letters.add_subparsers(dest="action", required=True)
    listing = letter_actions.add_parser("list", help="list dead letters, most recent first")
    listing.add_argument(
        "--include-replayed", action="store_true", help="also list those already replayed"
    )
    listing.add_argument("--limit", type=int, default=0, help="at most N (default: all)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    replay = letter_actions.add_parser(
        "replay", help="put dead-lettered emails back as QUEUED and enqueue them"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead letter not yet replayed")

    retention = commands.add_parser("retention", help="the retention job, run now")
    retention_actions = retention.add_subparsers(dest="action", required=True)
    run = retention_actions.add_parser(
        "run", help="purge the bodies, attachment contents and headers of old final emails"
    )
    run.add_argument(
        "--days",
        type=_positive_days,
        default=None,
        help="final emails last changed more than N days ago (default: MAILROOM_RETENTION_DAYS)",
    )
    run.add_argument("--json", action="store_true", help="print JSON")
    backfill.register(commands)
    events.register(commands)
    suppressions.register(commands)
    webhooks.register(commands)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one admin command.

    Args:
        argv: The arguments (default: the command line).
        out: Where results go (default: stdout).

    Returns:
        The exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    settings = get_settings()
    configure_logging("WARNING")
    try:
        if args.command == "providers":
            return cmd_providers(args, settings, out)
        connect(
            settings.mongodb_uri,
            timeout_ms=max(settings.mongodb_timeout_ms, 5_000),
            subscriptions_max_age_seconds=settings.webhooks.subscriptions_max_age_seconds,
        )
        if getattr(args, "run", None) is not None:  # a group of its own module (admin/*.py)
            return int(args.run(args, settings, out))
        if args.command == "retention":
            return cmd_retention_run(args, settings, out)
        if args.action == "list":
            return cmd_dead_letters_list(args, out)
        return cmd_dead_letters_replay(args, settings, out)
    except (StorageUnavailable, QueueUnavailable) as exc:
        sys.stderr.write(f"mailroom-admin: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
