"""Nothing lost, nothing sent twice: Redis outages, killed workers, racing schedulers, a soak.

Real processes: the API, workers, Redis, FerretDB, the SMTP sink, and ``mailroom-scheduler --once``
(the job a running scheduler's cron starts). Buffer times and leases are shortened by settings.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pymongo
import pytest
import redis
from aiosmtpd.smtp import SMTP, Envelope, Session
from bson import ObjectId
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.settings import Settings
from core.store import repository
from core.store.connection import connect
from core.store.documents import Email, EmailTurn, Outcome, Status, utcnow
from devtools.services import ManagedProcess
from devtools.smtp_sink import SinkHandler, make_controller
from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2, mail_pb2_grpc
from workers import locks
from workers.locks import hold
from workers.scheduler import RESCAN_LOCK, Jobs

BIN = Path(sys.executable).parent
DOMAIN = "mailroom.test"  # MAILROOM_MESSAGE_ID_DOMAIN of the test processes
MAIL_QUEUE = "dramatiq:mail"


# -- helpers -----------------------------------------------------------------------------------


def send(client, subject: str = "Hello", **fields) -> str:
    request = mail_pb2.SendEmailRequest(
        to=["to@example.com"], title=subject, content="Body\n", from_address="from@example.com"
    )
    for key, value in fields.items():
        setattr(request, key, value)
    return client.SendEmail(request, timeout=10).id


def message_id(email_id: str) -> str:
    return f"<{email_id}@{DOMAIN}>"


def received_ids(sink) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in sink.messages)


def wait_sent(client, email_id: str) -> None:
    wait_until(
        lambda: status(client, email_id) == mail_pb2.EMAIL_STATUS_SENT,
        timeout=10,
        message=f"email {email_id} SENT",
    )


def status(client, email_id: str) -> int:
    return client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=10).email.status


@contextmanager
def locks_of_another_process() -> Iterator[None]:
    """Take locks as another scheduler process would: without this one's unreleased tokens."""
    saved = dict(locks._unreleased)
    locks._unreleased.clear()
    try:
        yield
    finally:
        locks._unreleased.update(saved)


def run_scheduler_once(service_env: dict[str, str], job: str = "rescan", **settings: str):
    """Run ``mailroom-scheduler --once JOB`` and return its JSON result."""
    env = {**os.environ, **service_env, **settings}
    proc = subprocess.run(
        [str(BIN / "mailroom-scheduler"), "--once", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"scheduler failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def accepted_long_ago(subject: str, age: timedelta = timedelta(hours=1)) -> str:
    """Store a QUEUED email as the API would have an ``age`` ago (its id made then too)."""
    then = utcnow() - age
    email_id = ObjectId(ObjectId.from_datetime(then).binary[:4] + os.urandom(8))
    new = repository.NewEmail(
        to=["to@example.com"], subject=subject, text="Body\n", from_address="from@example.com"
    )
    document = repository.new_email_document(
        new, message_id_domain=DOMAIN, email_id=email_id, now=then
    )
    repository.insert_email(document)
    return str(email_id)


def queued_messages(client: redis.Redis) -> Counter[str]:
    """Delivery messages waiting on the mail queue, counted per email id."""
    counts: Counter[str] = Counter()
    for raw in client.hvals(f"{MAIL_QUEUE}.msgs"):
        message = json.loads(raw)
        if message.get("actor_name") == "deliver":
            counts[message["args"][0]] += 1
    return counts


# -- the lock ----------------------------------------------------------------------------------


def test_lock_is_exclusive_expires_and_is_released_only_by_its_owner(redis_client) -> None:
    name = "mailroom:test:lock"
    with hold(redis_client, name, ttl_seconds=60) as first:
        assert first is not None
        assert 0 < redis_client.pttl(name) <= 60_000  # it expires by itself
        with hold(redis_client, name, ttl_seconds=5) as second:
            assert second is None  # held: not taken
        # The first holder stalls past its expiry (brought forward here, not waited for); a
        # second owner takes the lock.
        redis_client.pexpire(name, 1)
        wait_until(lambda: redis_client.get(name) is None, timeout=5, message="lock expired")
        with hold(redis_client, name, ttl_seconds=5) as third:
            assert third is not None
            assert not first.extend()  # no longer ours: cannot keep it alive
            assert not first.owned()
        assert redis_client.get(name) is None  # the third released its own
    # The first one's exit did not delete anything it no longer owned.
    with hold(redis_client, name, ttl_seconds=5) as fourth:
        assert fourth is not None
        assert redis_client.get(name).decode() == fourth.token


def test_a_lock_left_by_a_redis_outage_is_dropped_by_its_owner_not_by_others(
    redis_server, redis_client
) -> None:
    name = f"mailroom:lock:outage-{os.getpid()}"
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        with hold(client, name, ttl_seconds=600) as lock:
            assert lock is not None
            redis_server.stop()  # the scan ends while Redis is down: the release fails
        redis_server.start()
        # Redis's append-only file brought the lock back, with most of its 600 s to live.
        assert redis_client.get(name) is not None
        other = redis.Redis.from_url(redis_server.url)
        with locks_of_another_process(), hold(other, name, ttl_seconds=600) as taken:
            assert taken is None
        other.close()
        with hold(client, name, ttl_seconds=600) as again:
            assert again is not None
        assert redis_client.get(name) is None
    finally:
        client.close()


# -- scenarios ---------------------------------------------------------------------------------


def test_email_accepted_while_redis_is_down_is_enqueued_as_soon_as_redis_is_back(
    envoy, mail_client, redis_server, start_worker, smtp_sink
) -> None:
    redis_server.stop()
    status_code, _, body = envoy.request(
        "POST",
        "/api/email",
        {"to": ["down@example.com"], "title": "while Redis was down", "content": "hi"},
    )
    assert status_code == 201, body
    email_id = body["id"]
    redis_server.start()
    start_worker()

    # No rescan runs: the API's own backlog enqueues it once Redis answers.
    wait_until(
        lambda: received_ids(smtp_sink)[message_id(email_id)] == 1,
        timeout=60,
        message="email accepted while Redis was down delivered once Redis is back",
    )
    wait_sent(mail_client, email_id)


def test_an_api_that_died_before_enqueueing_is_covered_by_the_minute_scan(
    envoy, api, mail_client, redis_server, redis_client, start_worker, smtp_sink, service_env
) -> None:
    redis_server.stop()
    status_code, _, body = envoy.request(
        "POST", "/api/email", {"to": ["d@example.com"], "title": "API died", "content": "hi"}
    )
    assert status_code == 201, body
    email_id = body["id"]
    api.kill()  # its in-process backlog dies with it
    redis_server.start()
    api.start()
    start_worker()
    assert queued_messages(redis_client)[email_id] == 0
    quick = {"MAILROOM_RESCAN__QUICK_BUFFER_SECONDS": "1"}
    wait_until(
        lambda: run_scheduler_once(service_env, "due", **quick)["requeued"].get("QUEUED", 0),
        timeout=30,
        message="the minute job's quick scan enqueues the email",
    )
    wait_until(
        lambda: received_ids(smtp_sink)[message_id(email_id)] == 1,
        timeout=30,
        message="email delivered after the quick scan",
    )
    wait_sent(mail_client, email_id)


def test_worker_killed_mid_delivery_is_replaced_after_the_lease_and_sent_once(
    mail_client, start_worker, smtp_sink, service_env, real_store
) -> None:
    # The lease is longer than the provider timeout, as in production, only shorter; the
    # timeout leaves the test 10 s to kill the worker while it is still inside DATA.
    lease_seconds = 12
    short = {
        "MAILROOM_LEASE_SECONDS": str(lease_seconds),
        "MAILROOM_SMTP__TIMEOUT_SECONDS": "10",
    }
    first = start_worker(**short)
    smtp_sink.delay(30)  # slow SMTP: the worker is inside DATA when it dies
    email_id = send(mail_client, "killed mid-delivery")
    wait_until(lambda: smtp_sink.data_commands >= 1, timeout=20, message="DATA under way")
    first.kill()
    smtp_sink.delay(0)
    assert status(mail_client, email_id) == mail_pb2.EMAIL_STATUS_SENDING
    claim = EmailTurn.objects(key=f"{email_id}:1").first()
    assert (claim.purpose, claim.provider) == ("claim", "smtp")
    start_worker(**short)

    wait_until(
        lambda: claim.expires_at < utcnow(), timeout=lease_seconds + 20, message="lease expired"
    )
    quick = {"MAILROOM_RESCAN__QUICK_BUFFER_SECONDS": "1", **short}
    result = run_scheduler_once(service_env, "due", **quick)

    assert result["requeued"].get("QUEUED", 0) >= 1
    messages = wait_until(
        lambda: [m for m in smtp_sink.messages if m.message["Message-ID"] == message_id(email_id)],
        timeout=20,
        message="another worker delivered the email",
    )
    wait_sent(mail_client, email_id)
    assert len(messages) == 1
    assert messages[0].received_at.replace(tzinfo=None) >= claim.expires_at
    email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id)).email
    outcomes = [a.outcome for a in email.attempts]
    assert outcomes == [mail_pb2.ATTEMPT_OUTCOME_INTERRUPTED, mail_pb2.ATTEMPT_OUTCOME_DELIVERED]
    assert email.attempts[0].worker == claim.owner
    assert email.attempts[0].provider == "smtp"
    assert email.attempts[1].worker != claim.owner


def test_a_claim_cut_short_by_a_kill_does_not_block_the_email_forever(
    mail_client, start_worker, smtp_sink, real_store
) -> None:
    email_id = send(mail_client, "claimer died after its turn")  # no worker yet
    # A worker took the email's next turn, then died before writing its claim (seen in a soak).
    EmailTurn(
        key=f"{email_id}:1",
        email_id=email_id,
        purpose="claim",
        owner="dead-worker",
        created_at=utcnow() - timedelta(hours=1),
    ).save(force_insert=True)

    start_worker()

    wait_until(
        lambda: received_ids(smtp_sink)[message_id(email_id)] == 1,
        timeout=20,
        message="the email delivered past the dead worker's turn",
    )
    wait_sent(mail_client, email_id)


def test_two_schedulers_rescanning_at_once_enqueue_each_email_once(
    mail_client, redis_client, service_env, real_store
) -> None:
    # Accepted an hour ago and never enqueued; a one-minute buffer: a scan right after another
    # finds them taken.
    ids = [accepted_long_ago(f"lost {i}") for i in range(30)]
    env = {**os.environ, **service_env, "MAILROOM_RESCAN__BUFFER_SECONDS": "60"}
    command = [str(BIN / "mailroom-scheduler"), "--once"]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    counts = queued_messages(redis_client)
    assert {email_id: counts[email_id] for email_id in ids} == dict.fromkeys(ids, 1)
    requeued = sum(sum(r["requeued"].values()) for r in results)
    assert requeued == sum(counts.values())


def test_a_held_rescan_lock_makes_another_scheduler_skip(
    mail_client, redis_client, service_env
) -> None:
    email_id = send(mail_client, "lock held")
    redis_client.flushdb()

    with hold(redis_client, RESCAN_LOCK, ttl_seconds=60) as lock:
        assert lock is not None
        skipped = run_scheduler_once(service_env, MAILROOM_RESCAN__BUFFER_SECONDS="0")
    done = run_scheduler_once(service_env, MAILROOM_RESCAN__BUFFER_SECONDS="0")

    assert skipped["lock_busy"] is True
    assert skipped["requeued"] == {}
    assert done["lock_busy"] is False
    assert queued_messages(redis_client)[email_id] == 1


def test_a_backlog_waiting_on_the_queue_is_not_enqueued_again_but_lost_messages_are(
    mail_client, redis_client, service_env, real_store
) -> None:
    ids = [send(mail_client, f"backlog {i}") for i in range(5)]  # no worker: they wait
    newest = max(Email.objects(id__in=ids).distinct("updated_at"))
    wait_until(lambda: utcnow() - newest > timedelta(seconds=1.5), timeout=5, message="aged")

    run_scheduler_once(service_env, MAILROOM_RESCAN__BUFFER_SECONDS="1")
    # (Other tests' stuck emails may be enqueued again; these waiting ones are not.)
    assert [queued_messages(redis_client)[i] for i in ids] == [1] * len(ids)

    redis_client.flushdb()  # now the messages are lost
    lost = run_scheduler_once(service_env, MAILROOM_RESCAN__BUFFER_SECONDS="1")
    assert lost["requeued"].get("QUEUED", 0) >= len(ids)
    assert [queued_messages(redis_client)[i] for i in ids] == [1] * len(ids)


def test_redis_restarted_while_messages_are_queued_every_email_ends_sent(
    mail_client, redis_server, start_worker, smtp_sink, service_env
) -> None:
    smtp_sink.delay(0.1)  # deliveries take a while: messages wait on the queue
    start_worker()
    ids = [send(mail_client, f"restart {i}") for i in range(40)]
    wait_until(lambda: len(smtp_sink.messages) >= 5, timeout=20, message="deliveries started")
    assert len(smtp_sink.messages) < len(ids)

    redis_server.restart()

    def all_sent() -> bool:
        return all(status(mail_client, i) == mail_pb2.EMAIL_STATUS_SENT for i in ids)

    wait_until(all_sent, timeout=60, interval=0.5, message="every email SENT after the restart")
    received = received_ids(smtp_sink)
    assert all(received[message_id(i)] == 1 for i in ids)


# -- soak --------------------------------------------------------------------------------------


class FlakySink(SinkHandler):
    """Answers 451 to a share of DATA commands, at random: a provider failing that often."""

    def __init__(self, failure_rate: float, seed: int) -> None:
        super().__init__()
        self.failure_rate = failure_rate
        self.refused = 0
        self._random = random.Random(seed)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._cond:
            fail = self._random.random() < self.failure_rate
            if fail:
                self.refused += 1
        if fail:
            return "451 4.3.0 flaky provider, try again later"
        return await super().handle_DATA(server, session, envelope)


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
        return reply.status == health_pb2.HealthCheckResponse.SERVING


# Larger runs: MAILROOM_SOAK_EMAILS=10000 MAILROOM_SOAK_DEADLINE=1800 pytest -k soak -s
SOAK_EMAILS = int(os.environ.get("MAILROOM_SOAK_EMAILS", "1000"))
SOAK_DEADLINE = float(os.environ.get("MAILROOM_SOAK_DEADLINE", "600"))
SOAK_KILL_EVERY = float(os.environ.get("MAILROOM_SOAK_KILL_EVERY", "4"))
SOAK_FAILURE_RATE = float(os.environ.get("MAILROOM_SOAK_FAILURE_RATE", "0.3"))
# A busy machine: MAILROOM_SOAK_HOG=2 runs two CPU-bound processes beside the soak.
SOAK_HOG = int(os.environ.get("MAILROOM_SOAK_HOG", "0"))


def cpu_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` processes that keep a core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


# How map_smtp_errors words a timeout or a lost connection: the sink may have taken the message.
_REPLY_LOST = ("disconnected", "Timeout", "timed out", "Reset", "BrokenPipe", "Aborted")


@pytest.mark.slow
@pytest.mark.timeout(SOAK_DEADLINE + 300)
def test_soak_kills_and_a_flaky_provider_lose_nothing(
    service_env, mongo_uri, redis_server, start_worker, tmp_path, real_store
) -> None:
    # A database of its own, so counts and the post-mortem see only the soak's emails.
    parts = urlsplit(mongo_uri)
    soak_uri = urlunsplit(parts._replace(path=f"{parts.path}_soak"))
    flaky = FlakySink(failure_rate=SOAK_FAILURE_RATE, seed=4)
    controller = make_controller(flaky, "127.0.0.1", free_port())
    controller.start()
    settings = {
        "MAILROOM_MONGODB_URI": soak_uri,
        "MAILROOM_SMTP__PORT": str(controller.port),
        "MAILROOM_LEASE_SECONDS": "4",
        "MAILROOM_SMTP__TIMEOUT_SECONDS": "3",
        "MAILROOM_BREAKER__RESET_TIMEOUT_SECONDS": "1",
    }
    api_port = free_port()
    api = ManagedProcess(
        "soak-api",
        [str(BIN / "mailroom-api")],
        log_path=tmp_path / "api.log",
        ready=lambda: _serving(f"127.0.0.1:{api_port}"),
        env={
            **service_env,
            **settings,
            "MAILROOM_GRPC_HOST": "127.0.0.1",
            "MAILROOM_GRPC_PORT": str(api_port),
        },
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{api_port}")
    client = mail_pb2_grpc.MailServiceStub(channel)
    connect(soak_uri, timeout_ms=5000)  # this process's store and rescan: the soak database
    jobs = Jobs(
        Settings(
            mongodb_uri=soak_uri,
            redis_url=redis_server.url,
            # What a scheduler's cron does, every few seconds instead of every 30 minutes.
            rescan={"buffer_seconds": 5, "batch_size": 200, "lock_seconds": 30},
            retry={"max_retries": int(service_env["MAILROOM_RETRY__MAX_RETRIES"])},
        )
    )
    workers = [start_worker(**settings), start_worker(**settings)]  # steady, victim
    stop = threading.Event()
    threads: list[threading.Thread] = []
    kills = 0
    rescans: Counter[str] = Counter()
    errors: list[BaseException] = []

    def in_background(fn: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the test below
                errors.append(exc)
                stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def kill_loop() -> None:
        # On the clock, and each time the sink has taken another sixth of the emails: the kills
        # land mid-delivery however fast the machine gets through the soak.
        nonlocal kills
        last_kill, shares = time.monotonic(), 1
        while SOAK_KILL_EVERY and not stop.wait(0.2):
            due = time.monotonic() - last_kill >= SOAK_KILL_EVERY
            if shares < 6 and len(flaky.messages) >= SOAK_EMAILS * shares / 6:
                shares, due = shares + 1, True
            if due:
                workers[1].kill()
                kills += 1
                workers[1] = start_worker(**settings)
                last_kill = time.monotonic()

    last_rescan: list[str] = []

    def rescan_loop() -> None:
        while not stop.wait(3.0):
            result = jobs.rescan()
            rescans.update(result.requeued)
            rescans["failed"] += len(result.failed)
            last_rescan[:] = [result.summary()]

    hogs = cpu_hogs(SOAK_HOG)
    started = time.monotonic()
    passed = False
    storage_timeouts: list[str] = []

    def submit(i: int) -> str:
        # What a careful client does (the SDK's idempotency key): an insert that misses the API's
        # storage budget is answered 500 (never sent) or 503 (not accepted); the same key makes
        # the retry safe.
        for _ in range(5):
            try:
                return send(client, f"soak {i}", idempotency_key=f"soak-{i}")
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                    raise
                storage_timeouts.append(str(exc.details()))
        raise AssertionError(f"soak {i} not accepted after 5 tries: {storage_timeouts[-1]}")

    try:
        # The workers deliver while the emails arrive: the kills start with the first.
        threads.append(in_background(kill_loop))
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(submit, range(SOAK_EMAILS)))
        print(
            f"\nsoak ({SOAK_HOG} CPU hogs beside it): "
            f"{SOAK_EMAILS} accepted in {time.monotonic() - started:.0f}s "
            f"({len(storage_timeouts)} answered 500 or 503 first and were retried)",
            flush=True,
        )
        assert len(set(ids)) == SOAK_EMAILS
        threads.append(in_background(rescan_loop))
        last_report = [time.monotonic()]

        def all_final() -> bool:
            counts = Counter(e.status for e in Email.objects.only("status"))
            if time.monotonic() - last_report[0] > 10:
                last_report[0] = time.monotonic()
                print(f"soak {time.monotonic() - started:.0f}s: {dict(counts)}", flush=True)
            return counts[Status.SENT] + counts[Status.FAILED] == SOAK_EMAILS

        try:
            wait_until(
                lambda: errors or all_final(),
                timeout=SOAK_DEADLINE,
                interval=3.0,
                message="every soak email SENT or FAILED",
            )
        except AssertionError as exc:
            stuck = [
                f"{e.id} {e.status} updated {e.updated_at} next {e.next_attempt_at} "
                f"generation {e.last_turn} attempts {[a.outcome for a in e.attempts]}"
                for e in Email.objects(status__nin=[Status.SENT, Status.FAILED])[:10]
            ]
            raise AssertionError(
                f"{exc}; last rescan: {last_rescan}; not final: " + "; ".join(stuck)
            ) from None
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not errors, errors
        elapsed = time.monotonic() - started

        emails = list(Email.objects.only("status", "last_error", "attempts", "last_turn"))
        assert sorted(str(e.id) for e in emails) == sorted(ids)
        by_status = Counter(e.status for e in emails)
        failed_without_reason = [
            str(e.id) for e in emails if e.status == Status.FAILED and not e.last_error
        ]
        received = Counter(str(m.message["Message-ID"]) for m in flaky.messages)
        duplicated = {mid: n for mid, n in received.items() if n > 1}
        duplicates = sum(n - 1 for n in duplicated.values())
        interrupted = {
            message_id(str(e.id))
            for e in emails
            if any(a.outcome == Outcome.INTERRUPTED for a in e.attempts)
        }
        # A send the sink may have taken with its reply lost (a timeout or disconnect, never
        # the sink's 451): recorded as a transient failure, then sent again.
        unanswered = {
            message_id(str(e.id))
            for e in emails
            if any(
                a.outcome == Outcome.TRANSIENT
                and any(sign in a.error for sign in _REPLY_LOST)
                and "flaky provider" not in a.response
                for a in e.attempts
            )
        }
        # A claim that took over an expired lease and was killed before writing anything,
        # while the slow first holder went on to write SENT: its turn is past the last one
        # the email records.
        taken_over = {
            message_id(str(e.id))
            for e in emails
            if message_id(str(e.id)) in duplicated
            and EmailTurn.objects(key=f"{e.id}:{int(e.last_turn or 0) + 1}").first() is not None
        }
        print(
            f"soak: {SOAK_EMAILS} emails in {elapsed:.0f}s; {by_status.get('SENT', 0)} SENT, "
            f"{by_status.get('FAILED', 0)} FAILED; worker SIGKILLs: {kills}; "
            f"SMTP 451 answers: {flaky.refused}; re-enqueued by rescans: {dict(rescans)}; "
            f"emails with an INTERRUPTED attempt: {len(interrupted)}; "
            f"duplicates at the sink (by Message-ID): {duplicates} "
            f"({len(set(duplicated) - interrupted)} of them without a recorded interruption, "
            f"{len(set(duplicated) - interrupted - unanswered - taken_over)} without a "
            "recorded cause)"
        )
        assert by_status[Status.SENT] + by_status[Status.FAILED] == SOAK_EMAILS
        # At least once, never twice without a cause: every email the sink took twice had a
        # worker killed between the sink's acceptance and SENT, lost the sink's reply, or
        # outlived its lease while a second worker sent it.
        uncaused = set(duplicated) - interrupted - unanswered - taken_over
        assert uncaused == set(), {mid: duplicated[mid] for mid in uncaused}
        assert failed_without_reason == []
        sent = [str(e.id) for e in emails if e.status == Status.SENT]
        assert all(received[message_id(i)] >= 1 for i in sent)
        assert kills >= 3 or not SOAK_KILL_EVERY
        passed = True
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        # Nothing may use the soak database when it is dropped (FerretDB crashes otherwise).
        for handle in workers:
            handle.stop(timeout=15)
        jobs.close()
        channel.close()
        api.stop()
        controller.stop()
        connect(mongo_uri, timeout_ms=5000)  # back to the session's database
        if passed:  # a failed soak's database is kept for a post-mortem
            with pymongo.MongoClient(soak_uri) as mongo:
                mongo.drop_database(urlsplit(soak_uri).path.strip("/"))
