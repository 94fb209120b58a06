"""Unknown JSON fields in a REST body are refused with 400 naming them, and nothing is stored.

The transcoder alone would drop them: a misspelled ``reply_too`` or ``bcc_list`` would send the
email without its Reply-To or its blind copies and the caller would never know.
"""

from __future__ import annotations

import pytest

from core.store.documents import Email

BASE = {"to": ["a@example.com"], "title": "hi", "content": "hello"}


def field_violations(body: object) -> list[str]:
    assert isinstance(body, dict), body
    return [
        v["field"]
        for d in body.get("details", [])
        for v in d.get("fieldViolations", d.get("field_violations", []))
    ]


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("/api/email", {**BASE, "reply_too": "r@example.com"}, ["reply_too"]),
        (
            "/api/email",
            {**BASE, "bcc_list": ["b@example.com"], "Title": "x"},
            ["Title", "bcc_list"],
        ),
        (
            "/api/email",
            {**BASE, "attachments": [{"filename": "a.txt", "content": "aGk=", "fileName": "b"}]},
            ["attachments[0].fileName"],
        ),
        (
            "/api/emails:batch",
            {"emails": [BASE, {**BASE, "sendat": "2026-12-24T00:00:00Z"}]},
            ["emails[1].sendat"],
        ),
        ("/api/emails:batch", {"emails": [BASE], "dryRun": True}, ["dryRun"]),
    ],
    ids=["top-level", "two-fields", "nested", "batch-item", "batch"],
)
def test_an_unknown_field_is_refused_naming_it_and_nothing_is_stored(
    envoy, real_store, path, body, fields
):
    before = Email.objects.count()

    status, headers, answer = envoy.request("POST", path, body)

    assert status == 400, answer
    assert headers.get("content-type", "").startswith("application/json")
    assert answer["code"] == 3
    assert field_violations(answer) == fields
    for field in fields:
        assert field in answer["message"]
    assert Email.objects.count() == before


def test_known_fields_pass_in_either_spelling_and_maps_take_any_key(envoy, real_store):
    body = {
        **BASE,
        "replyTo": "r@example.com",
        "idempotency_key": "unknown-fields-either-spelling",
        "metadata": {"anyKey": "v", "reply_too": "keys of a map are data"},
        "headers": {"X-Anything": "v"},
    }

    status, _, answer = envoy.request("POST", "/api/email", body)

    assert status == 201, answer
    stored = Email.objects.get(id=answer["id"])
    assert stored.reply_to == "r@example.com"
    assert stored.metadata == {"anyKey": "v", "reply_too": "keys of a map are data"}


def test_an_unknown_field_in_a_cancel_body_is_refused(envoy, real_store):
    status, _, answer = envoy.request("POST", f"/api/email/{'0' * 24}:cancel", {"force": True})

    assert status == 400, answer
    assert field_violations(answer) == ["force"]
