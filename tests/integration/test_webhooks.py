"""Outbound webhooks end to end: Envoy, the API, real workers, Redis, FerretDB and a receiver.

A receiver that is down while emails are sent gets every event once it is back, in order per
email, each signed and verified with the SDK's ``verify_webhook``; lost messages are swept; a
dead delivery is listed and replayed with ``mailroom-admin``; the worker's metrics count it all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core import events_out
from core.events_out import WebhookQueue, event_id_for
from core.store.documents import utcnow
from helpers import free_port, wait_until
from mailroom import verify_webhook

BIN = Path(sys.executable).parent
# Short backoff, a budget large enough to outlast the receiver's outage.
FAST = {
    "MAILROOM_WEBHOOKS__MIN_BACKOFF_MS": "200",
    "MAILROOM_WEBHOOKS__MAX_BACKOFF_MS": "1500",
    "MAILROOM_WEBHOOKS__MAX_ATTEMPTS": "200",
    "MAILROOM_WEBHOOKS__TIMEOUT_SECONDS": "5",
}


class Receiver:
    """A webhook receiver on a fixed port that can be stopped (connection refused) and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 204
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.received.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, path: str = "/hook") -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for p, h, b in self.received if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    handle = Receiver()
    yield handle
    handle.stop()


@pytest.fixture
def hooks(envoy, redis_server, real_store, monkeypatch) -> Iterator[list[str]]:
    """Webhook ids the test made, deleted afterwards; this process publishes to the test Redis."""
    monkeypatch.setattr(
        events_out, "_queue", WebhookQueue(redis_server.url, "mail.webhooks", timeout_seconds=2)
    )
    created: list[str] = []
    yield created
    for hook_id in created:
        envoy.request("DELETE", f"/api/webhooks/{hook_id}")


def create_hook(envoy, hooks: list[str], url: str, **extra: object) -> dict:
    status, _, body = envoy.request("POST", "/api/webhooks", {"url": url, **extra})
    assert status == 201, body
    hooks.append(body["webhook"]["id"])
    return body


def send(envoy, **extra: object) -> str:
    status, _, body = envoy.request(
        "POST", "/api/email", {"to": ["a@example.com"], "title": "t", "content": "c", **extra}
    )
    assert status == 201, body
    return body["id"]


def email_status(envoy, email_id: str) -> str:
    return envoy.request("GET", f"/api/email/{email_id}")[2]["email"]["status"]


def deliveries(envoy, **query: str) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, _, body = envoy.request("GET", f"/api/webhooks/deliveries?pageSize=500&{qs}")
    assert status == 200, body
    return body.get("deliveries", [])


def admin(service_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mailroom-admin"), *args],
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rest_refuses_bad_webhooks_naming_the_field(envoy, hooks) -> None:
    status, _, body = envoy.request(
        "POST", "/api/webhooks", {"url": "ftp://x", "eventTypes": ["email.sent", "email.nope"]}
    )
    assert status == 400, body
    fields = [v["field"] for v in body["details"][0]["fieldViolations"]]
    assert fields == ["url", "event_types[1]"]
    status, _, _ = envoy.request("DELETE", "/api/webhooks/6564a1f0c2a4b5e0d1f3a9b2")
    assert status == 404
    created = create_hook(envoy, hooks, "https://receiver.example/hook")
    assert created["secret"].startswith("whsec_")
    status, _, listed = envoy.request("GET", "/api/webhooks")
    assert status == 200 and created["webhook"]["id"] in [w["id"] for w in listed["webhooks"]]
    assert "whsec_" not in json.dumps(listed)


def test_a_receiver_down_then_up_gets_every_event_in_order(
    envoy, hooks, receiver, start_worker, smtp_sink
) -> None:
    every = create_hook(envoy, hooks, receiver.url("/hook"))
    final = create_hook(envoy, hooks, receiver.url("/final"), finalOutcomesOnly=True)
    metrics_port = free_port()
    start_worker(**FAST, MAILROOM_METRICS_PORT=str(metrics_port))
    # The receiver is down from here on: connection refused.

    smtp_sink.respond_with(550, "5.1.1 no such user", stage="RCPT")
    failed = send(envoy)
    wait_until(
        lambda: email_status(envoy, failed) == "EMAIL_STATUS_FAILED", timeout=60, message="failed"
    )
    sent = [send(envoy) for _ in range(4)]
    later = (utcnow() + timedelta(hours=1)).isoformat() + "Z"
    cancelled = send(envoy, sendAt=later)
    status, _, _ = envoy.request("POST", f"/api/email/{cancelled}:cancel")
    assert status == 200
    for email_id in sent:
        wait_until(
            lambda e=email_id: email_status(envoy, e) == "EMAIL_STATUS_SENT",
            timeout=60,
            message="sent",
        )
        wait_until(
            lambda e=email_id: deliveries(envoy, emailId=e), timeout=30, message="sent event stored"
        )
        # What a provider reports next (the provider events endpoint publishes these).
        events_out.publish(
            email_id, "email.deferred", {"reason": "greylisted"}, occurred_at=utcnow()
        )
        events_out.publish(email_id, "email.delivered", {"provider": "smtp"}, occurred_at=utcnow())
        events_out.publish(email_id, "email.opened", {}, occurred_at=utcnow())

    # While it is down, attempts are made and recorded (no HTTP answer: status 0).
    wait_until(
        lambda: any(
            d.get("attempts") and d["attempts"][0].get("statusCode", 0) == 0
            for d in deliveries(envoy, webhookId=every["webhook"]["id"])
        ),
        timeout=30,
        message="failed attempts recorded while the receiver is down",
    )

    receiver.start()
    expected = {
        failed: ["email.failed"],
        cancelled: ["email.cancelled"],
        **{e: ["email.sent", "email.deferred", "email.delivered", "email.opened"] for e in sent},
    }
    total = sum(len(v) for v in expected.values())
    wait_until(
        lambda: len({h["webhook-id"] for h, _ in receiver.events("/hook")}) >= total,
        timeout=120,
        message=f"all {total} events received",
    )
    order: dict[str, list[str]] = {}
    for headers, body in receiver.events("/hook"):
        event = verify_webhook(body, headers, every["secret"])
        seen = order.setdefault(event["data"]["email_id"], [])
        if event["type"] not in seen:
            seen.append(event["type"])
        assert headers["webhook-id"] == event["id"]
    assert order == expected
    assert event_id_for(failed, "email.failed") in {h["webhook-id"] for h, _ in receiver.events()}

    # Final outcomes only: no deferrals or opens.
    finals = {
        e: [x for x in types if x not in ("email.deferred", "email.opened")]
        for e, types in expected.items()
    }
    final_total = sum(len(v) for v in finals.values())
    wait_until(
        lambda: len({h["webhook-id"] for h, _ in receiver.events("/final")}) >= final_total,
        timeout=60,
        message="final outcomes received",
    )
    got: dict[str, list[str]] = {}
    for headers, body in receiver.events("/final"):
        event = verify_webhook(body, headers, final["secret"])
        got.setdefault(event["data"]["email_id"], []).append(event["type"])
    assert {e: list(dict.fromkeys(t)) for e, t in got.items()} == finals

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    text = wait_until(
        lambda: (
            (t := scrape()) and 'mailroom_webhook_deliveries_total{outcome="delivered"}' in t and t
        ),
        timeout=30,
        message="webhook metrics exported",
        ignore=(OSError,),
    )
    assert 'mailroom_webhook_deliveries_total{outcome="retry"}' in text
    assert "mailroom_webhook_oldest_pending_age_seconds" in text


def test_events_published_while_redis_is_down_are_swept_and_delivered(
    envoy, hooks, receiver, service_env, start_worker, monkeypatch
) -> None:
    hook = create_hook(envoy, hooks, receiver.url())
    receiver.start()
    start_worker(**FAST)
    # Redis unreachable when the event is published: stored in the outbox, not enqueued.
    monkeypatch.setattr(
        events_out,
        "_queue",
        WebhookQueue(f"redis://127.0.0.1:{free_port()}/0", "mail.webhooks", timeout_seconds=1),
    )
    events_out.publish("swept-email", "email.sent", {}, occurred_at=utcnow())
    (pending,) = deliveries(envoy, emailId="swept-email")
    assert pending["state"] == "WEBHOOK_DELIVERY_STATE_PENDING"
    env = {**os.environ, **service_env, "MAILROOM_WEBHOOKS__SWEEP_GRACE_SECONDS": "0"}
    done = subprocess.run(
        [str(BIN / "mailroom-scheduler"), "--once", "webhooks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["enqueued"] >= 1
    (headers, body), *_ = wait_until(receiver.events, timeout=60, message="swept delivery sent")
    assert verify_webhook(body, headers, hook["secret"])["data"]["email_id"] == "swept-email"


def test_a_dead_delivery_is_listed_and_replayed(
    envoy, hooks, receiver, start_worker, service_env
) -> None:
    hook = create_hook(envoy, hooks, receiver.url(), eventTypes=["email.sent"])
    receiver.status = 500
    receiver.start()
    start_worker(**{**FAST, "MAILROOM_WEBHOOKS__MAX_ATTEMPTS": "2"})
    email_id = send(envoy)
    dead = wait_until(
        lambda: deliveries(envoy, emailId=email_id, state="WEBHOOK_DELIVERY_STATE_DEAD"),
        timeout=60,
        message="the delivery is dead",
    )
    assert [a["statusCode"] for a in dead[0]["attempts"]] == [500, 500]
    listed = admin(service_env, "webhooks", "deliveries", "list", "--state", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    assert dead[0]["id"] in [row["id"] for row in json.loads(listed.stdout)]

    receiver.status = 204
    replayed = admin(service_env, "webhooks", "deliveries", "replay", dead[0]["id"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    wait_until(
        lambda: deliveries(envoy, emailId=email_id, state="WEBHOOK_DELIVERY_STATE_DELIVERED"),
        timeout=60,
        message="the replayed delivery is delivered",
    )
    headers, body = receiver.events()[-1]
    assert verify_webhook(body, headers, hook["secret"])["data"]["email_id"] == email_id
    # Through REST: a delivery that is not dead is not replayed; an unknown one is not found.
    status, _, answer = envoy.request("POST", f"/api/webhooks/deliveries/{dead[0]['id']}:replay")
    assert status == 400 and "not dead" in answer["message"], answer
    status, _, _ = envoy.request("POST", "/api/webhooks/deliveries/evt_nope_x:replay")
    assert status == 404
