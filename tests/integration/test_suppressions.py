"""The suppression list end to end: REST through Envoy, gRPC, the SDK and mailroom-admin, and
SendEmail dropping or refusing suppressed recipients, on the real API over the test store.

The session's store is shared with other tests: each test uses addresses of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import mailroom
from core.store.suppressions import suppress, unsuppress
from helpers import wait_until
from mailroom import MailroomClient, OutgoingEmail, SuppressionReason
from mailroom_processes import ApiProcess

BIN = Path(sys.executable).parent
SERVICE = "mailroom.v1.SuppressionService"


def address(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def violations(body: Any) -> dict[str, str]:
    """The field violations of a REST error body (a google.rpc.Status as JSON)."""
    found: dict[str, str] = {}
    for detail in body.get("details", []):
        for violation in detail.get("fieldViolations", []):
            found[violation["field"]] = violation["description"]
    return found


def all_listed(envoy: Any, query: str = "") -> list[dict[str, Any]]:
    """Every entry of GET /api/suppressions, following the page tokens (2 a page)."""
    entries: list[dict[str, Any]] = []
    token = ""
    while True:
        status, _, body = envoy.request(
            "GET", f"/api/suppressions?pageSize=2&pageToken={token}{query}"
        )
        assert status == 200, body
        entries += body["suppressions"]
        token = body["nextPageToken"]
        if not token:
            return entries


def test_rest_add_list_remove_through_envoy(envoy: Any) -> None:
    mixed = address("Mixed").replace("Mixed", "MiXeD")
    lower = mixed.lower()
    status, _, body = envoy.request("POST", "/api/suppressions", {"address": mixed})
    assert status == 201, body
    assert body["created"] is True
    assert body["suppression"]["address"] == lower
    assert body["suppression"]["reason"] == "SUPPRESSION_REASON_MANUAL"
    assert body["suppression"]["createTime"].endswith("Z")
    status, _, body = envoy.request(
        "POST", "/api/suppressions", {"address": lower, "reason": "SUPPRESSION_REASON_COMPLAINT"}
    )
    assert status == 200 and body["created"] is False, body
    assert body["suppression"]["reason"] == "SUPPRESSION_REASON_MANUAL"

    listed = [e["address"] for e in all_listed(envoy, "&reason=SUPPRESSION_REASON_MANUAL")]
    assert listed.count(lower) == 1

    status, _, body = envoy.request("DELETE", f"/api/suppressions/{lower}")
    assert status == 200, body
    assert body["suppression"]["address"] == lower
    status, _, body = envoy.request("DELETE", f"/api/suppressions/{lower}")
    assert status == 404 and "address" in body["message"], body


def test_pages_list_each_entry_once(envoy: Any) -> None:
    mine = {address("paged") for _ in range(5)}
    for entry in mine:
        status, _, body = envoy.request(
            "POST",
            "/api/suppressions",
            {"address": entry, "reason": "SUPPRESSION_REASON_UNSUBSCRIBE"},
        )
        assert status == 201, body
    listed = [e["address"] for e in all_listed(envoy, "&reason=SUPPRESSION_REASON_UNSUBSCRIBE")]
    assert mine <= set(listed)
    assert len(listed) == len(set(listed))


def test_a_plus_address_is_removed_by_its_path(envoy: Any) -> None:
    plus = address("tag+news")
    assert envoy.request("POST", "/api/suppressions", {"address": plus})[0] == 201
    status, _, body = envoy.request("DELETE", f"/api/suppressions/{plus.replace('+', '%2B')}")
    assert status == 200 and body["suppression"]["address"] == plus, body


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("POST", "/api/suppressions", {"address": "not an address"}, "address"),
        ("POST", "/api/suppressions", {"address": ""}, "address"),
        ("POST", "/api/suppressions", {"address": "Bob <bob@example.com>"}, "address"),
        ("DELETE", "/api/suppressions/nope", None, "address"),
        ("GET", "/api/suppressions?pageSize=-1", None, "page_size"),
        ("GET", "/api/suppressions?pageToken=garbage", None, "page_token"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    envoy: Any, method: str, path: str, payload: Any, field: str
) -> None:
    status, _, body = envoy.request(method, path, payload)
    assert status == 400, body
    assert field in violations(body), body


def test_send_drops_a_suppressed_recipient_and_reports_it(envoy: Any) -> None:
    kept, gone, bounced = address("kept"), address("gone"), address("bounced")
    assert envoy.request("POST", "/api/suppressions", {"address": gone})[0] == 201
    assert (
        envoy.request(
            "POST",
            "/api/suppressions",
            {"address": bounced, "reason": "SUPPRESSION_REASON_HARD_BOUNCE"},
        )[0]
        == 201
    )
    local = gone.split("@")[0].upper()
    shouted = f"{local}@EXAMPLE.COM"  # stored with its local part as given, the domain lowercased
    email = {"to": [kept, shouted], "bcc": [bounced], "title": "t", "content": "c"}
    status, _, body = envoy.request("POST", "/api/email", email)
    assert status == 201, body
    assert body["droppedRecipients"] == [
        {
            "field": "to[1]",
            "address": f"{local}@example.com",
            "reason": "SUPPRESSION_REASON_MANUAL",
        },
        {"field": "bcc[0]", "address": bounced, "reason": "SUPPRESSION_REASON_HARD_BOUNCE"},
    ]
    status, _, stored = envoy.request("GET", f"/api/email/{body['id']}")
    assert status == 200
    assert (stored["email"]["to"], stored["email"]["bcc"]) == ([kept], [])

    status, _, body = envoy.request(
        "POST", "/api/email", {"to": [gone], "cc": [kept], "title": "t", "content": "c"}
    )
    assert status == 400, body
    assert "suppressed (manual)" in violations(body)["to[0]"]


def test_a_batch_drops_and_refuses_per_email(envoy: Any) -> None:
    kept, gone = address("kept"), address("gone")
    assert envoy.request("POST", "/api/suppressions", {"address": gone})[0] == 201
    emails = [
        {"to": [kept], "cc": [gone], "title": "t", "content": "c"},
        {"to": [gone], "title": "t", "content": "c"},
    ]
    status, _, body = envoy.request("POST", "/api/emails:batch", {"emails": emails})
    assert status == 200, body
    first, second = body["results"]
    assert first["id"] and first["droppedRecipients"][0]["field"] == "cc[0]"
    assert not second["id"]
    assert "emails[1].to[0]" in json.dumps(second["error"])


def test_grpc_and_the_sdk(api: ApiProcess) -> None:
    entry = address("sdk")
    with MailroomClient(api.target, timeout=10) as client:
        assert client.add_suppression(entry, reason=SuppressionReason.COMPLAINT) is True
        assert client.add_suppression(entry) is False
        found = [s for s in client.list_suppressions(page_size=3) if s.address == entry]
        assert [(s.reason, s.provider) for s in found] == [(SuppressionReason.COMPLAINT, None)]
        with pytest.raises(mailroom.InvalidArgument) as caught:
            client.send_email([entry], "t", "c")
        assert caught.value.violations[0].field == "to[0]"
        batch = client.send_email_batch([OutgoingEmail(["ok@example.com", entry], "t", "c")])
        assert [d.field for d in batch[0].dropped_recipients] == ["to[1]"]
        assert client.remove_suppression(entry).reason is SuppressionReason.COMPLAINT
        with pytest.raises(mailroom.NotFound):
            client.remove_suppression(entry)
        with pytest.raises(mailroom.InvalidArgument) as caught:
            client.add_suppression("nope")
        assert caught.value.violations[0].field == "address"
        assert client.send_email([entry], "t", "c")


def test_health_and_reflection_list_the_service(api: ApiProcess) -> None:
    with grpc.insecure_channel(api.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [s.name for r in responses for s in r.list_services_response.service]
    assert SERVICE in names and "mailroom.v1.MailService" in names


def test_a_hard_bounce_written_by_another_process_blocks_sends_within_a_poll(
    api: ApiProcess, real_store: None
) -> None:
    # What a provider's hard-bounce event handled by another process does: the API process
    # learns it from the list's change notes (MAILROOM_SUPPRESSION_SNAPSHOT_POLL_SECONDS, 1 s).
    kept, bounced = address("kept"), address("bounced")
    assert suppress(bounced, "hard_bounce", provider="ses", event_id="evt-1") is True
    with MailroomClient(api.target, timeout=10) as client:

        def dropped() -> bool:
            answer = client.send_email_batch([OutgoingEmail([kept], "t", "c", cc=[bounced])])
            return [d.field for d in answer[0].dropped_recipients] == ["cc[0]"]

        wait_until(dropped, timeout=30, interval=0.2, message="the API drops the bounced address")
        with pytest.raises(mailroom.InvalidArgument) as caught:
            client.send_email([bounced], "t", "c")
        assert "hard_bounce" in caught.value.violations[0].description
        [entry] = [s for s in client.list_suppressions() if s.address == bounced]
        assert (entry.provider, entry.event_id) == ("ses", "evt-1")


def test_a_removal_by_another_process_applies_to_the_very_next_send(
    api: ApiProcess, real_store: None
) -> None:
    gone = address("gone")
    with MailroomClient(api.target, timeout=10) as client:
        client.add_suppression(gone)  # through the API: its copy holds it at once
        with pytest.raises(mailroom.InvalidArgument):
            client.send_email([gone], "t", "c")
        assert unsuppress(gone)  # another process; no wait for any poll
        assert client.send_email([gone], "t", "c")


@pytest.fixture
def refusing_api(service_env: dict[str, str], tmp_path: Path) -> Any:
    handle = ApiProcess(
        {**service_env, "MAILROOM_SUPPRESSION_POLICY": "refuse"}, tmp_path / "api.log"
    ).start()
    yield handle
    handle.stop()


def test_the_refuse_policy_refuses_any_suppressed_recipient(refusing_api: ApiProcess) -> None:
    kept, gone = address("kept"), address("gone")
    with MailroomClient(refusing_api.target, timeout=10) as client:
        client.add_suppression(gone)
        with pytest.raises(mailroom.InvalidArgument) as caught:
            client.send_email([kept], "t", "c", cc=[gone])
        assert [v.field for v in caught.value.violations] == ["cc[0]"]
        assert client.send_email([kept], "t", "c")


def test_the_admin_cli_edits_the_list_the_api_reads(
    api: ApiProcess, service_env: dict[str, str]
) -> None:
    entry = address("admin")

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mailroom-admin"), "suppressions", *args],
            env={**os.environ, **service_env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = admin("add", entry, "--reason", "unsubscribe")
    assert added.returncode == 0 and f"{entry}: added" in added.stdout, added.stderr
    listed = admin("list", "--reason", "unsubscribe", "--json")
    assert entry in [row["address"] for row in json.loads(listed.stdout)]
    with MailroomClient(api.target, timeout=10) as client:
        assert [s.reason for s in client.list_suppressions() if s.address == entry] == [
            SuppressionReason.UNSUBSCRIBE
        ]
    removed = admin("remove", entry)
    assert removed.returncode == 0 and f"{entry}: removed" in removed.stdout
    again = admin("remove", entry)
    assert again.returncode == 1 and "not suppressed" in again.stdout
    assert admin("add", "not-an-address").returncode == 1


def test_the_list_needs_an_api_key_when_keys_are_set(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    keyed = ApiProcess({**service_env, "MAILROOM_API_KEYS": '["s3cret"]'}, tmp_path / "api.log")
    keyed.start()
    try:
        entry = address("keyed")
        with MailroomClient(keyed.target, timeout=10) as client:
            with pytest.raises(mailroom.Unauthenticated):
                client.add_suppression(entry)
            with pytest.raises(mailroom.Unauthenticated):
                list(client.list_suppressions())
        with MailroomClient(keyed.target, api_key="s3cret", timeout=10) as client:
            assert client.add_suppression(entry) is True
            assert client.remove_suppression(entry).address == entry
    finally:
        keyed.stop()


def test_an_address_suppressed_after_accept_is_not_sent_to(
    api: ApiProcess, smtp_sink: Any, start_worker: Any
) -> None:
    kept, gone, only = address("kept"), address("gone"), address("only")
    with MailroomClient(api.target, timeout=10) as client:
        # Accepted while nothing is suppressed, sent once a worker runs: after the suppressions.
        dropped_id = client.send_email([kept, gone], "late drop", "c")
        failed_id = client.send_email([only], "late fail", "c")
        client.add_suppression(gone)
        client.add_suppression(only, reason=SuppressionReason.HARD_BOUNCE)
        start_worker(MAILROOM_SUPPRESSION_RECHECK_SECONDS="0")
        wait_until(
            lambda: (
                client.get_email(dropped_id).status.is_final
                and client.get_email(failed_id).status.is_final
            ),
            timeout=60,
            message="both emails are final",
        )
        assert client.get_email(dropped_id).status is mailroom.EmailStatus.SENT
        failed = client.get_email(failed_id)
    assert failed.status is mailroom.EmailStatus.FAILED
    [attempt] = failed.attempts
    assert attempt.provider == "suppression"
    assert f"to[0] {only} (hard_bounce)" in (attempt.error or "")
    [message] = [
        m
        for m in smtp_sink.messages
        if m.message["Subject"] == "late drop" and dropped_id in m.message["Message-ID"]
    ]
    assert message.rcpt_tos == [kept]


def test_a_misspelled_field_is_refused_not_ignored(envoy: Any) -> None:
    entry = address("typo")
    status, _, body = envoy.request("POST", "/api/suppressions", {"adress": entry})
    assert status == 400, body
    assert "adress" in json.dumps(body)
    status, _, body = envoy.request("DELETE", f"/api/suppressions/{entry}")
    assert status == 404, body
