"""The delivery engine end to end: API → worker processes → fake provider APIs on 127.0.0.1.

Provider A is SendGrid and provider B is Postmark, both pointed (``base_url``) at small threaded
HTTP servers of this module that answer as scripted per test and record the start and end of
every request. Breaker state is read from the same Redis keys the workers share.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2
from workers.breaker_state import RedisState
from workers.breakers import BreakerBoard

BIN = Path(sys.executable).parent
SENT = mail_pb2.EMAIL_STATUS_SENT
FAILED = mail_pb2.EMAIL_STATUS_FAILED
DELIVERED = mail_pb2.ATTEMPT_OUTCOME_DELIVERED
TRANSIENT = mail_pb2.ATTEMPT_OUTCOME_TRANSIENT
PERMANENT = mail_pb2.ATTEMPT_OUTCOME_PERMANENT
THROTTLED = mail_pb2.ATTEMPT_OUTCOME_THROTTLED
MISCONFIGURED = mail_pb2.ATTEMPT_OUTCOME_MISCONFIGURED


# --- fake provider APIs -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict
    start: float
    end: float = 0.0
    status: int = 0

    @property
    def message_id(self) -> str:
        """Our Message-ID, wherever this provider's payload carries it."""
        if "headers" in self.body:  # SendGrid
            return self.body["headers"]["Message-ID"]
        return next(h["Value"] for h in self.body["Headers"] if h["Name"] == "Message-ID")


class FakeApi:
    """A provider API: answers POSTs from a script, then with its default answer.

    Args:
        kind: ``sendgrid`` or ``postmark``: what a success looks like and where requests go.
    """

    PATHS = {"sendgrid": "/v3/mail/send", "postmark": "/email"}

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[Request] = []
        self._script: list[Answer] = []
        self._default = self.ok()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                record = Request(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(self.rfile.read(int(self.headers["Content-Length"]))),
                    start=time.monotonic(),
                )
                answer = fake._next()
                if answer.delay:
                    time.sleep(answer.delay)  # the provider's own processing time
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                record.end, record.status = time.monotonic(), answer.status
                with fake._lock:
                    fake.requests.append(record)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ok(self, delay: float = 0.0) -> Answer:
        """What this provider answers when it accepts an email."""
        if self.kind == "sendgrid":
            return Answer(202, headers={"X-Message-Id": "sg-accepted"}, delay=delay)
        return Answer(
            200, json.dumps({"ErrorCode": 0, "MessageID": "pm-accepted"}).encode(), delay=delay
        )

    def script(self, *answers: Answer, default: Answer | None = None) -> None:
        """Answer the next requests with ``answers``, then with ``default`` (unchanged if None)."""
        with self._lock:
            self._script = list(answers)
            if default is not None:
                self._default = default

    def _next(self) -> Answer:
        with self._lock:
            return self._script.pop(0) if self._script else self._default

    def for_email(self, email_id: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if email_id in r.message_id]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SERVER_ERROR = Answer(500, b'{"errors":[{"message":"internal error"}]}')


@pytest.fixture
def provider_a() -> Iterator[FakeApi]:
    fake = FakeApi("sendgrid")
    yield fake
    fake.close()


@pytest.fixture
def provider_b() -> Iterator[FakeApi]:
    fake = FakeApi("postmark")
    yield fake
    fake.close()


def engine_env(a: FakeApi, b: FakeApi | None = None, **extra: str) -> dict[str, str]:
    """Worker settings: A (SendGrid) first, then B (Postmark); SMTP off."""
    env = {
        "MAILROOM_SMTP__ENABLED": "false",
        "MAILROOM_PROVIDER_ORDER": json.dumps(["sendgrid", "postmark"] if b else ["sendgrid"]),
        "MAILROOM_PROVIDERS__SENDGRID__API_KEY": "sg-key",
        "MAILROOM_PROVIDERS__SENDGRID__BASE_URL": a.url,
        "MAILROOM_PROVIDERS__SENDGRID__TIMEOUT_SECONDS": "5",
        "MAILROOM_BREAKER__FAIL_MAX": "3",
        # Long enough never to pass during a test: tests that need it move time (make_due).
        "MAILROOM_BREAKER__RESET_TIMEOUT_SECONDS": "60",
    }
    if b is not None:
        env |= {
            "MAILROOM_PROVIDERS__POSTMARK__API_KEY": "pm-token",
            "MAILROOM_PROVIDERS__POSTMARK__BASE_URL": b.url,
            "MAILROOM_PROVIDERS__POSTMARK__TIMEOUT_SECONDS": "5",
        }
    return env | extra


@pytest.fixture(autouse=True)
def empty_redis(redis_client) -> None:
    """Start from an empty Redis: no breaker state and no message left by an earlier test's API
    calls without a worker (our workers would deliver them, counting against the breakers)."""
    redis_client.flushdb()


@pytest.fixture
def breakers(redis_client) -> BreakerBoard:
    """The providers' breakers as the workers share them in Redis (read from this process)."""
    return BreakerBoard(
        ["sendgrid", "postmark"], RedisState(redis_client), fail_max=3, reset_timeout=60
    )


def make_due(redis_client, name: str) -> None:
    """Let the reset timeout of ``name``'s open breaker pass at once, for every process.

    Moves pybreaker's shared ``opened_at`` (epoch seconds) an hour back instead of waiting:
    waiting for a short timeout would race with the steps a test takes while the breaker is open.
    """
    redis_client.set(f"mailroom:breaker:{name}:pybreaker:opened_at", int(time.time()) - 3600)


def send(mail_client, title: str = "Hello") -> str:
    reply = mail_client.SendEmail(
        mail_pb2.SendEmailRequest(to=["someone@example.com"], title=title, content="body"),
        timeout=5,
    )
    return reply.id


def wait_status(mail_client, email_id: str, status: int, timeout: float = 30.0):
    def check():
        email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=5).email
        return email if email.status == status else None

    return wait_until(
        check,
        timeout=timeout,
        interval=0.1,
        message=f"email {email_id} reaches {mail_pb2.EmailStatus.Name(status)}",
    )


def attempts(email) -> list[tuple[str, int]]:
    return [(a.provider, a.outcome) for a in email.attempts]


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mailroom-admin"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def admin_env(service_env) -> Callable[..., dict[str, str]]:
    def make(worker_env: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **service_env, **worker_env}

    return make


# --- scenarios ----------------------------------------------------------------------------------


def test_failing_provider_opens_its_breaker_then_recovers_through_a_probe(
    start_worker, mail_client, provider_a, provider_b, breakers, admin_env, redis_client
):
    provider_a.script(default=SERVER_ERROR)
    # Two failures open A's breaker: fewer than A's own retry budget for one email (3).
    env = engine_env(provider_a, provider_b, MAILROOM_BREAKER__FAIL_MAX="2")
    worker = start_worker(**env)

    # The retry stays with A until A's breaker opens, then goes out through B.
    before_opening = time.monotonic()
    first = send(mail_client, "first")
    email = wait_status(mail_client, first, SENT)
    assert attempts(email) == [
        ("sendgrid", TRANSIENT),
        ("sendgrid", TRANSIENT),
        ("postmark", DELIVERED),
    ]
    assert email.provider == "postmark"
    assert provider_a.count() == 2
    status = breakers["sendgrid"].status()
    assert (status.state, status.fail_counter) == ("open", 2)

    # Visible to operators, from another process.
    listing = admin(admin_env(env), "providers", "--json")
    since_opening = time.monotonic() - before_opening
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["sendgrid"]["state"] == "open"
    assert rows["sendgrid"]["fail_counter"] == 2
    # Counts down from the 60 s reset timeout by at most the time that passed here: pybreaker
    # keeps the opening time in whole seconds (up to 1 s early) and the CLI rounds to 0.1 s.
    assert 60 - since_opening - 1.1 <= rows["sendgrid"]["seconds_to_half_open"] <= 60
    assert rows["postmark"]["state"] == "closed"
    assert rows["ses"]["enabled"] is False
    table = admin(admin_env(env), "providers")
    assert "sendgrid" in table.stdout and "open" in table.stdout and "2/2" in table.stdout

    # While open, new emails go straight to B: A is not even tried.
    for email_id in [send(mail_client, f"while open {i}") for i in range(3)]:
        assert attempts(wait_status(mail_client, email_id, SENT)) == [("postmark", DELIVERED)]
    assert provider_a.count() == 2

    # A recovers. Once the reset timeout has passed, one email probes A and closes the breaker.
    provider_a.script(default=provider_a.ok())
    make_due(redis_client, "sendgrid")
    assert breakers["sendgrid"].status().seconds_to_half_open == 0
    probe = send(mail_client, "probe")
    assert attempts(wait_status(mail_client, probe, SENT)) == [("sendgrid", DELIVERED)]
    status = breakers["sendgrid"].status()
    assert (status.state, status.fail_counter) == ("closed", 0)

    # Traffic is back on A.
    after = [send(mail_client, f"after {i}") for i in range(3)]
    for email_id in after:
        assert attempts(wait_status(mail_client, email_id, SENT)) == [("sendgrid", DELIVERED)]

    log = worker.log_path.read_text()
    assert "sendgrid: circuit breaker OPEN" in log
    assert "sendgrid: circuit breaker HALF-OPEN" in log
    assert "sendgrid: circuit breaker CLOSED" in log


def test_throttled_attempt_waits_at_least_retry_after(
    start_worker, mail_client, provider_a, breakers
):
    provider_a.script(
        Answer(429, b'{"errors":[{"message":"too many requests"}]}', {"Retry-After": "2"})
    )
    start_worker(**engine_env(provider_a))
    email_id = send(mail_client)
    email = wait_status(mail_client, email_id, SENT)
    assert attempts(email) == [("sendgrid", THROTTLED), ("sendgrid", DELIVERED)]
    first, second = provider_a.for_email(email_id)
    # The backoff alone would be under 0.3 s (MAILROOM_RETRY__MIN_BACKOFF_MS=300).
    assert second.start - first.end >= 2.0
    status = breakers["sendgrid"].status()
    assert (status.state, status.fail_counter) == ("closed", 0)


def test_permanent_rejection_fails_at_once_and_leaves_the_breaker_alone(
    start_worker, mail_client, provider_a, provider_b, breakers
):
    start_worker(**engine_env(provider_a, provider_b))
    # One 500 first, so that "untouched" means something: the count must stay at 1. Then A
    # rejects every email as invalid (SendGrid's 400).
    invalid = Answer(
        400,
        b'{"errors":[{"message":"Does not contain a valid address.",'
        b'"field":"personalizations.0.to"}]}',
    )
    provider_a.script(SERVER_ERROR, default=invalid)
    warm = send(mail_client, "warm-up")
    assert attempts(wait_status(mail_client, warm, FAILED)) == [
        ("sendgrid", TRANSIENT),
        ("sendgrid", PERMANENT),
    ]
    assert breakers["sendgrid"].status().fail_counter == 1

    rejected = send(mail_client, "rejected")
    email = wait_status(mail_client, rejected, FAILED)
    assert attempts(email) == [("sendgrid", PERMANENT)]
    assert "400" in email.last_error
    assert len(provider_a.for_email(rejected)) == 1
    assert provider_b.for_email(rejected) == []
    status = breakers["sendgrid"].status()
    assert (status.state, status.fail_counter) == ("closed", 1)


def test_every_provider_down_retries_with_growing_delays_then_dead_letter_and_replay(
    start_worker, mail_client, provider_a, provider_b, admin_env
):
    provider_a.script(default=SERVER_ERROR)
    provider_b.script(default=SERVER_ERROR)
    # A high threshold keeps the breakers closed: this is about the email's own retries.
    # Backoffs well above Dramatiq's ~1 s polling of delayed messages, so their growth shows.
    env = engine_env(
        provider_a,
        provider_b,
        MAILROOM_BREAKER__FAIL_MAX="100",
        MAILROOM_RETRY__MIN_BACKOFF_MS="1500",
        MAILROOM_RETRY__MAX_BACKOFF_MS="20000",
    )
    start_worker(**env)

    email_id = send(mail_client, "doomed")
    email = wait_status(mail_client, email_id, FAILED)
    # max_retries=3: four attempts; the retries stay with A for its own budget (3), then B.
    assert attempts(email) == [("sendgrid", TRANSIENT)] * 3 + [("postmark", TRANSIENT)]
    assert email.last_error.startswith("retries exhausted after 4 attempts")
    assert "postmark" in email.last_error and "500" in email.last_error

    requests = sorted(
        provider_a.for_email(email_id) + provider_b.for_email(email_id), key=lambda r: r.start
    )
    gaps = [later.start - earlier.end for earlier, later in itertools.pairwise(requests)]
    # Backoff with jitter: the n-th wait is in [min·2ⁿ⁻¹/2, min·2ⁿ⁻¹] (min 1.5 s), plus up to
    # ~1 s of Dramatiq's delay polling; so the third wait (≥ 3 s) beats the first (≤ 2.5 s).
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 1.5 * 2 ** (n - 1) / 2 - 0.05, gaps
    assert gaps[2] > gaps[0], gaps

    listing = admin(admin_env(env), "dead-letters", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [letter] = [d for d in json.loads(listing.stdout) if d["id"] == email_id]
    assert letter["attempts"] == 4
    assert letter["replayed_at"] is None
    assert "retries exhausted" in letter["last_error"]

    # The providers recover; the operator replays the dead letter.
    provider_a.script(default=provider_a.ok())
    provider_b.script(default=provider_b.ok())
    replayed = admin(admin_env(env), "dead-letters", "replay", email_id)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    email = wait_status(mail_client, email_id, SENT)
    # The history stays; the replay starts over as a first attempt, on A.
    assert attempts(email) == [("sendgrid", TRANSIENT)] * 3 + [
        ("postmark", TRANSIENT),
        ("sendgrid", DELIVERED),
    ]
    assert email.last_error == ""


def test_credentials_refused_takes_a_out_of_rotation_for_every_email(
    start_worker, mail_client, provider_a, provider_b, breakers
):
    provider_a.script(
        default=Answer(
            401, b'{"errors":[{"message":"The provided authorization grant is invalid"}]}'
        )
    )
    start_worker(**engine_env(provider_a, provider_b))
    first = send(mail_client, "first")
    assert attempts(wait_status(mail_client, first, SENT)) == [
        ("sendgrid", MISCONFIGURED),
        ("postmark", DELIVERED),
    ]
    later = [send(mail_client, f"later {i}") for i in range(3)]
    for email_id in later:
        assert attempts(wait_status(mail_client, email_id, SENT)) == [("postmark", DELIVERED)]
    assert provider_a.count() == 1
    status = breakers["sendgrid"].status()
    assert "401" in status.out_of_rotation
    # A credentials problem is not an outage: the breaker did not count it.
    assert (status.state, status.fail_counter) == ("closed", 0)


def test_two_worker_processes_share_the_breaker_state(
    start_worker, mail_client, provider_a, provider_b, breakers
):
    provider_a.script(default=SERVER_ERROR)
    env = engine_env(provider_a, provider_b, MAILROOM_BREAKER__FAIL_MAX="2")
    first_worker = start_worker(**env)
    opened_by_first = send(mail_client, "first")
    email = wait_status(mail_client, opened_by_first, SENT)
    assert attempts(email) == [
        ("sendgrid", TRANSIENT),
        ("sendgrid", TRANSIENT),
        ("postmark", DELIVERED),
    ]
    assert breakers["sendgrid"].status().state == "open"
    first_pids = {a.worker.split(":")[1] for a in email.attempts}
    first_worker.stop()

    # A new process, started after the breaker opened, never tries A.
    start_worker(**env)
    second = [send(mail_client, f"second {i}") for i in range(4)]
    for email_id in second:
        email = wait_status(mail_client, email_id, SENT)
        assert attempts(email) == [("postmark", DELIVERED)]
        assert email.attempts[0].worker.split(":")[1] not in first_pids
    assert provider_a.count() == 2


def test_ten_concurrent_sends_through_one_provider_overlap(start_worker, mail_client, provider_a):
    provider_a.script(default=provider_a.ok(delay=0.5))
    start_worker(**engine_env(provider_a), MAILROOM_WORKER_THREADS="10")
    ids = [send(mail_client, f"concurrent {i}") for i in range(10)]
    for email_id in ids:
        assert attempts(wait_status(mail_client, email_id, SENT)) == [("sendgrid", DELIVERED)]
    intervals = [(r.start, r.end) for r in provider_a.requests]
    assert len(intervals) == 10
    # The most requests in flight at one instant: 1 if the breaker serialized the sends.
    in_flight = max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)
    assert in_flight >= 5, intervals
