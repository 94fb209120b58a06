"""``mailroom-admin suppressions list|add|remove`` against mongomock (the parser and commands)."""

from __future__ import annotations

import io
import json

import pytest

from admin.cli import build_parser
from core.settings import Settings
from core.store.suppressions import Suppression, suppress, suppressed_among


def run(settings: Settings, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["suppressions", *argv])
    out = io.StringIO()
    return int(args.run(args, settings, out)), out.getvalue()


@pytest.fixture(autouse=True)
def _store(fake_store: None) -> None:
    Suppression.drop_collection()


def test_add_then_add_again_then_remove(settings: Settings) -> None:
    assert run(settings, "add", "Bob@Example.com", "--reason", "complaint") == (
        0,
        "bob@example.com: added\n",
    )
    assert run(settings, "add", "bob@example.com") == (0, "bob@example.com: already suppressed\n")
    assert suppressed_among(["bob@example.com"]) == {"bob@example.com": "complaint"}
    assert run(settings, "remove", "bob@example.com") == (0, "bob@example.com: removed\n")
    assert run(settings, "remove", "bob@example.com") == (1, "bob@example.com: not suppressed\n")


def test_an_invalid_address_is_named_and_fails_the_command(settings: Settings) -> None:
    status, text = run(settings, "add", "ok@example.com", "not-an-address")
    assert status == 1
    assert "ok@example.com: added" in text and "not-an-address: not a valid address" in text


def test_an_odd_address_a_provider_suppressed_is_removable(settings: Settings) -> None:
    suppress("weird..dots@example.com", "hard_bounce")
    assert run(settings, "remove", "weird..dots@example.com") == (
        0,
        "weird..dots@example.com: removed\n",
    )


def test_an_unknown_reason_is_a_usage_error(settings: Settings) -> None:
    with pytest.raises(SystemExit) as caught:
        run(settings, "add", "a@example.com", "--reason", "bored")
    assert caught.value.code == 2


def test_list_as_json_and_table_with_filter_and_limit(settings: Settings) -> None:
    for i in range(4):
        suppress(f"u{i}@example.com", "hard_bounce" if i % 2 else "manual", provider="ses")
    status, text = run(settings, "list", "--json")
    rows = json.loads(text)
    assert status == 0 and len(rows) == 4
    assert set(rows[0]) == {"address", "reason", "provider", "event_id", "created_at"}
    status, text = run(settings, "list", "--reason", "hard_bounce", "--json")
    assert sorted(r["address"] for r in json.loads(text)) == ["u1@example.com", "u3@example.com"]
    status, text = run(settings, "list", "--limit", "3")
    lines = text.splitlines()
    assert lines[0].split() == ["ADDRESS", "REASON", "PROVIDER", "EVENT_ID", "CREATED_AT"]
    assert len(lines) == 4


def test_an_empty_list_says_so(settings: Settings) -> None:
    assert run(settings, "list") == (0, "no suppressed addresses\n")
