"""Delivery: one ``mailroom-worker`` sending a stored, enqueued batch, against raw smtplib.

* sink alone: raw smtplib into the SMTP sink at 1 and N threads, so a sink that caps below the
  targets shows;
* raw: a plain smtplib loop at the worker's concurrency sending the very MIME messages the
  worker builds (``workers.mime.build_outgoing``) to the same sink, a connection kept per thread
  as the worker's SMTP provider keeps one; measured before and after the worker, averaged;
* raw+store: the raw loop again after the worker, each send between the two writes the worker
  makes for a first-attempt success (claim: insert the email's next turn; record SENT: one
  fenced update), with plain pymongo: the floor under any worker that writes them;
* worker: the batch stored (``new_email_document`` + ``insert_many``, the API's documents) and
  enqueued (``DeliveryQueue``, the API's messages), then one worker process with the default
  threads, timed from its first fetch (its first heartbeat in Redis) until every email is SENT.
"""

from __future__ import annotations

import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pymongo
import redis
from bson import ObjectId

from bench.common import (
    BIN,
    MESSAGE_ID_DOMAIN,
    RAW_EMAIL,
    WORKER_QUEUE,
    CpuMeter,
    Store,
    cpu_seconds,
    descendants,
    ensure_indexes,
    free_port,
    percentile,
)
from core.queue import DeliveryQueue
from core.settings import Settings
from core.store.carried import carry
from core.store.documents import Email, utcnow
from core.store.repository import new_email_document
from core.store.turn_taking import TurnPurpose, lease_keys
from devtools.services import ManagedProcess
from workers.mime import build_outgoing

ROOT = Path(__file__).resolve().parents[1]
# The worker's default threads per process, which the raw baseline matches.
WORKER_THREADS = int(Settings.model_fields["worker_threads"].default)
LEASE_SECONDS = float(Settings.model_fields["lease_seconds"].default)


# -- the SMTP sink ------------------------------------------------------------------------------


def _smtp_ready(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=1) as smtp:
        return smtp.noop()[0] == 250


def start_sink(tmp: Path, name: str, *, files: bool) -> ManagedProcess:
    """Start the project's sink (``bench.sink``) in its own process; ``.url`` = its port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port)]
    argv += ["--count-file", str(tmp / f"{name}.count")]
    if files:
        argv += ["--dir", str(tmp / name)]
    return ManagedProcess(
        name,
        argv,
        log_path=tmp / f"{name}.log",
        ready=lambda: _smtp_ready(port),
        url=str(port),
        cwd=ROOT,
    ).start()


def sink_port(sink: ManagedProcess) -> int:
    return int(sink.url)


def sink_count(sink: ManagedProcess) -> int:
    """How many DATA transactions the sink has answered since it started."""
    try:
        return int((sink.log_path.parent / f"{sink.name}.count").read_text() or 0)
    except (OSError, ValueError):
        return 0


def wait_for_sink(sink: ManagedProcess, count: int, deadline: float) -> int:
    """Poll (every 10 ms) until the sink has answered ``count`` DATA transactions or deadline."""
    while True:
        seen = sink_count(sink)
        if seen >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


# -- raw smtplib --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    sender: str
    recipients: list[str]
    mime: bytes
    email_id: str = ""


def build_messages(documents: list[dict[str, Any]]) -> list[Outgoing]:
    """The envelope and MIME bytes the worker's SMTP provider sends for each stored email."""
    messages = []
    for document in documents:
        outgoing = build_outgoing(Email._from_son(document))
        recipients = list(dict.fromkeys(parseaddr(r)[1] for r in outgoing.recipients))
        sender = parseaddr(outgoing.from_address)[1]
        messages.append(Outgoing(sender, recipients, outgoing.mime, str(document["_id"])))
    return messages


@dataclass
class SendRun:
    sent: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


class StoreWrites:
    """The two writes the worker makes for a first-attempt success, with plain pymongo.

    The ``raw + store`` row: claim (insert the email's next turn, as
    ``core.store.turn_taking.insert_turn`` does) before the send, record SENT (one update fenced
    by the claim's generation, as ``workers.store.claims.record_sent`` does) after it. Run after
    the worker on the same emails, so each claim is turn 2 and each update a second attempt.
    """

    def __init__(self, db: pymongo.database.Database[dict[str, Any]], generation: int) -> None:
        self.db = db
        self.generation = generation

    def claim(self, email_id: str) -> None:
        now = utcnow()
        expires = now + timedelta(seconds=LEASE_SECONDS)
        self.db.email_turns.insert_one(
            {
                "_id": f"{email_id}:{self.generation}",
                "email_id": email_id,
                "purpose": str(TurnPurpose.CLAIM),
                "owner": f"bench:{threading.current_thread().name}",
                "created_at": now,
                "expires_at": expires,
                "list_buckets": lease_keys(now, expires),
                "provider": "smtp",
            }
        )

    def record_sent(self, email_id: str, started_at: datetime, seconds: float) -> None:
        now = utcnow()
        attempt = {
            "provider": "smtp",
            "started_at": started_at,
            "duration_ms": seconds * 1000,
            "outcome": "DELIVERED",
            "response": "250 OK",
            "worker": f"bench:{threading.current_thread().name}",
        }
        result = self.db.emails.update_one(
            {"_id": ObjectId(email_id), "claim_generation": {"$lt": self.generation}},
            {
                "$set": {
                    "claim_generation": self.generation,
                    "updated_at": now,
                    "status": "SENT",
                    "sent_at": now,
                    "provider": "smtp",
                    "provider_message_id": "",
                    "last_error": "",
                },
                "$unset": {"next_attempt_at": ""},
                "$push": {"attempts": {"$each": [attempt]}},
                "$inc": {"attempt_count": 1, "provider_attempts.smtp": 1},
            },
        )
        if result.matched_count != 1:
            raise RuntimeError(f"email {email_id}: the fenced update matched nothing")


# smtplib would look the FQDN up on every connection; the worker's provider does it once too.
LOCAL_HOSTNAME = socket.getfqdn()


def send_all(
    messages: list[Outgoing],
    port: int,
    threads: int,
    *,
    reuse: bool = False,
    writes: StoreWrites | None = None,
) -> SendRun:
    """Send every message from ``threads`` threads.

    Each message on a connection of its own (connect, EHLO, MAIL, RCPT…, DATA, QUIT); with
    ``reuse``, each thread keeps one connection for all its messages, as the worker's SMTP
    provider does (``MAILROOM_SMTP__IDLE_SECONDS`` > 0): the raw baseline uses that. With
    ``writes``, each send is claimed before and recorded after (the ``raw + store`` row).
    """
    run = SendRun()
    lock = threading.Lock()
    pending = iter(messages)

    def connect() -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", port, local_hostname=LOCAL_HOSTNAME, timeout=30)

    def loop() -> None:
        local: list[float] = []
        errors: Counter[str] = Counter()
        kept: smtplib.SMTP | None = None
        while True:
            with lock:
                message = next(pending, None)
            if message is None:
                break
            start = time.perf_counter()
            try:
                if writes is not None:
                    writes.claim(message.email_id)
                    started_at = utcnow()
                    began = time.perf_counter()
                if reuse:
                    kept = kept or connect()
                    kept.sendmail(message.sender, message.recipients, message.mime)
                else:
                    smtp = connect()
                    try:
                        smtp.sendmail(message.sender, message.recipients, message.mime)
                        smtp.quit()
                    finally:
                        smtp.close()
                if writes is not None:
                    writes.record_sent(message.email_id, started_at, time.perf_counter() - began)
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if kept is not None:
                    kept.close()
                    kept = None
                continue
            local.append(time.perf_counter() - start)
        if kept is not None:
            kept.quit()
        with lock:
            run.latencies += local
            run.errors.update(errors)

    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()
    run.elapsed = time.monotonic() - began
    run.sent = len(run.latencies)
    return run


def sink_alone(sinks: dict[str, ManagedProcess], messages: list[Outgoing]) -> None:
    """Raw smtplib into the sink: 1 and N threads, files or not, a connection per message or not."""
    print(f"\nSMTP sink alone (raw smtplib, {len(messages)} messages per row):")
    header = f"{'sink':<8} {'connection':<11} {'threads':>7} {'msgs/s':>8} {'p50 ms':>7} "
    header += f"{'p99 ms':>7} {'errors':>6} {'sink CPU ms/msg':>15}"
    print(header)
    print("-" * len(header))
    for kind, threads, reuse in (
        ("files", 1, False),
        ("files", WORKER_THREADS, False),
        ("files", WORKER_THREADS, True),
        ("memory", WORKER_THREADS, False),
        ("memory", WORKER_THREADS, True),
    ):
        sink = sinks[kind]
        pids = descendants(sink.pid or 0)
        before = cpu_seconds(pids)
        run = send_all(messages, sink_port(sink), threads, reuse=reuse)
        cpu_ms = (cpu_seconds(pids) - before) * 1000 / max(run.sent, 1)
        cells = f"{kind:<8} {'per thread' if reuse else 'per message':<11} {threads:>7} "
        cells += f"{run.rate:>8.1f} {percentile(run.latencies, 0.5) * 1000:>7.2f} "
        cells += f"{percentile(run.latencies, 0.99) * 1000:>7.2f} "
        cells += f"{sum(run.errors.values()):>6} {cpu_ms:>15.2f}"
        print(cells, flush=True)
    print(
        "  files: the sink writes each message and its envelope as files, as in make dev; "
        "memory: it keeps nothing"
    )


# -- the worker ---------------------------------------------------------------------------------


def worker_env(store: Store, database: str, redis_db: int, smtp_port: int) -> dict[str, str]:
    return {
        "MAILROOM_MONGODB_URI": store.mongo_uri(database),
        "MAILROOM_REDIS_URL": store.redis_url(redis_db),
        "MAILROOM_SMTP__HOST": "127.0.0.1",
        "MAILROOM_SMTP__PORT": str(smtp_port),
        "MAILROOM_METRICS_PORT": "0",
        "MAILROOM_WORKER_PROCESSES": "1",
    }


@dataclass
class WorkerStart:
    process: ManagedProcess
    spawned: float  # time.monotonic() when it was spawned
    first_fetch: float  # time.monotonic() when its first heartbeat was seen
    first_fetch_utc: datetime  # the same moment, on the clock of created_at and sent_at


def start_worker(
    tmp: Path, env: dict[str, str], redis_url: str, *, name: str = "worker", timeout: float = 60
) -> WorkerStart:
    """Start one ``mailroom-worker`` and wait for its first fetch.

    The first fetch is when its first heartbeat appears in Redis (polled every 10 ms): Dramatiq's
    Redis broker writes it with the first fetch of messages.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete("dramatiq:__heartbeats__")
        worker = ManagedProcess(
            name, [str(BIN / "mailroom-worker")], log_path=tmp / f"{name}.log", env=env
        )
        spawned = time.monotonic()
        worker.start()
        deadline = spawned + timeout
        while not client.zcard("dramatiq:__heartbeats__"):
            if not worker.running or time.monotonic() > deadline:
                worker.stop()
                tail = worker.log_tail()
                raise RuntimeError(f"the worker did not start; end of its log:\n{tail}")
            time.sleep(0.01)
        return WorkerStart(worker, spawned, time.monotonic(), utcnow())
    finally:
        client.close()


# Not final yet. Whether any email is in one of these is asked one status at a time: FerretDB
# pushes an equality filter down to PostgreSQL, and find_one stops at the first match, whereas a
# count (or $in) makes FerretDB fetch and decode every matching document (0.4 s for 3,000).
PENDING = ("QUEUED", "SENDING", "RETRYING", "SCHEDULED")


def wait_until_final(
    collection: pymongo.collection.Collection,
    sink: ManagedProcess,
    sink_target: int,
    deadline: float,
) -> bool:
    """Wait until the sink got ``sink_target`` messages, then until no email is pending."""
    wait_for_sink(sink, sink_target, deadline)
    while any(collection.find_one({"status": s}, {"_id": 1}) for s in PENDING):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class DeliveryResult:
    worker_rate: float
    raw_rate: float
    sent: int
    emails: int
    raw_store_rate: float = 0.0

    @property
    def ratio(self) -> float:
        return self.worker_rate / self.raw_rate if self.raw_rate else 0.0

    @property
    def floor(self) -> float:
        """raw+store over raw: what two store writes per email leave of the raw rate."""
        return self.raw_store_rate / self.raw_rate if self.raw_rate else 0.0

    @property
    def of_floor(self) -> float:
        """The worker over raw+store: the cost of the worker's own work."""
        return self.worker_rate / self.raw_store_rate if self.raw_store_rate else 0.0


def batch(count: int) -> list[dict[str, Any]]:
    """``count`` QUEUED emails, each the document the API stores for the bench's body."""
    return [
        new_email_document(
            RAW_EMAIL, message_id_domain=MESSAGE_ID_DOMAIN, email_id=ObjectId(), now=utcnow()
        )
        for _ in range(count)
    ]


def per_email(meter: CpuMeter, rate: float) -> str:
    """The meter's CPU per email at ``rate`` emails/s, in ms per process."""
    if not rate:
        return ""
    cells = [f"{name} {cores * 1000 / rate:.2f}" for name, cores in meter.cores.items()]
    return "; per email (ms): " + ", ".join(cells)


def store_batch(db: pymongo.database.Database, documents: list[dict[str, Any]]) -> None:
    """Insert the batch, stamped now (so ``created_at`` is when it was stored)."""
    now = utcnow()
    for document in documents:
        document["created_at"] = document["updated_at"] = now
    for start in range(0, len(documents), 500):
        db.emails.insert_many(documents[start : start + 500], ordered=False)


def py_spy_record(pid: int, output: Path, mode: str) -> subprocess.Popen[bytes]:
    """Record the worker: ``gil`` samples the thread holding the GIL (where its CPU goes),
    ``wall`` every thread, waiting ones included (where its time goes)."""
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    print(f"profiling the worker (pid {pid} and its children) into {output}")
    form = {".json": "speedscope", ".txt": "raw"}.get(output.suffix, "flamegraph")
    argv = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "200"]
    argv += ["--format", form, "--output", str(output), "--nonblocking"]
    argv += ["--gil"] if mode == "gil" else ["--idle"]
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def run(
    tmp: Path,
    store: Store,
    sinks: dict[str, ManagedProcess],
    *,
    emails: int,
    timeout: float,
    profile: Path | None,
    profile_mode: str = "gil",
    sink_kind: str = "files",
) -> DeliveryResult:
    database, redis_db = "mailroom_delivery", 1
    uri = store.mongo_uri(database)
    ensure_indexes(uri)
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    db = mongo.get_default_database()
    sink = sinks[sink_kind]
    port = sink_port(sink)
    try:
        documents = batch(emails)
        messages = build_messages(documents)
        sink_alone(sinks, messages[: min(len(messages), 600)])

        raw_before = send_all(messages, port, WORKER_THREADS, reuse=True)

        began = time.monotonic()
        store_batch(db, documents)
        stored_in = time.monotonic() - began

        queue = DeliveryQueue(store.redis_url(redis_db), WORKER_QUEUE, timeout_seconds=5)
        began = time.monotonic()
        for document in documents:
            # As the API enqueues a just-stored email: with its copy (core.store.carried).
            queue.enqueue_delivery(str(document["_id"]), stored=carry(document))
        enqueued_in = time.monotonic() - began
        queue.close()

        sink_before = sink_count(sink)
        env = worker_env(store, database, redis_db, port)
        started = start_worker(tmp, env, store.redis_url(redis_db))
        worker = started.process
        meter = CpuMeter({"worker": worker.pid, **store.pids(), "sink": sink.pid})
        meter.start()
        spy = py_spy_record(worker.pid or 0, profile, profile_mode) if profile else None
        try:
            finished = wait_until_final(
                db.emails, sink, sink_before + emails, started.first_fetch + timeout
            )
            meter.stop()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
                spy.wait(60)
            worker.stop(timeout=30)
        received = sink_count(sink) - sink_before

        raw_after = send_all(messages, port, WORKER_THREADS, reuse=True)
        # Read before the raw+store row writes a second attempt into every email.
        stored = list(
            db.emails.find({}, {"status": 1, "created_at": 1, "sent_at": 1, "attempts": 1})
        )

        # The floor under the worker: raw smtplib plus the two writes it cannot do without.
        store_meter = CpuMeter({**store.pids(), "sink": sink.pid})
        store_meter.start()
        raw_store = send_all(
            messages, port, WORKER_THREADS, reuse=True, writes=StoreWrites(db, generation=2)
        )
        store_meter.stop()

    finally:
        mongo.close()

    statuses = Counter(d["status"] for d in stored)
    sent = statuses.get("SENT", 0)
    sent_ats = [d["sent_at"] for d in stored if d.get("sent_at")]
    # From the worker's first fetch to the last sent_at the worker wrote.
    window = (max(sent_ats) - started.first_fetch_utc).total_seconds() if sent_ats else 0.0
    worker_rate = sent / window if window > 0 else 0.0
    raw_rate = (raw_before.rate + raw_after.rate) / 2
    attempts = [a for d in stored for a in d.get("attempts", [])]
    durations = [float(a.get("duration_ms", 0.0)) / 1000 for a in attempts]
    queued_to_sent = [
        (d["sent_at"] - d["created_at"]).total_seconds() for d in stored if d.get("sent_at")
    ]

    print(
        f"\ndelivery: {emails} emails stored in {stored_in:.2f}s (insert_many), enqueued in "
        f"{enqueued_in:.2f}s (DeliveryQueue); one mailroom-worker, 1 process x "
        f"{WORKER_THREADS} threads (defaults); into the sink "
        + ("writing .eml files" if sink_kind == "files" else "writing no files")
    )
    header = f"{'path':<9} {'threads':>7} {'emails':>7} {'emails/s':>9} {'send p50':>9} "
    header += f"{'send p99':>9} {'errors':>6} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, rate, latencies, errs in (
        ("raw", raw_before.rate, raw_before.latencies, sum(raw_before.errors.values())),
        ("raw", raw_after.rate, raw_after.latencies, sum(raw_after.errors.values())),
        ("raw+store", raw_store.rate, raw_store.latencies, sum(raw_store.errors.values())),
        ("worker", worker_rate, durations, emails - statuses.get("SENT", 0)),
    ):
        ratio = rate / raw_rate if raw_rate else 0.0
        count = len(latencies) if label.startswith("raw") else sent
        cells = f"{label:<9} {WORKER_THREADS:>7} {count:>7} {rate:>9.1f} "
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        cells += f"{p50:>7.1f}ms {p99:>7.1f}ms "
        cells += f"{errs:>6} {ratio:>6.2f}"
        print(cells)
    print(
        "  raw = the first row before the worker ran, the second after; the ratio is to their "
        "mean.\n  send p50/p99: one SMTP transaction (connect … QUIT); for the worker, the "
        "attempt's duration_ms as the worker recorded it.\n  raw+store: the raw loop, each "
        "send claimed before (insert of the email's next turn) and recorded SENT after (one "
        "fenced update), with pymongo: the two writes the worker makes, with none of its own "
        "work (its send p50/p99 include the two writes);"
        f" {raw_store.rate / raw_rate if raw_rate else 0:.2f} of raw, the most a worker "
        "that writes them can reach at this concurrency.\n  raw+store "
        + store_meter.line()
        + per_email(store_meter, raw_store.rate)
    )
    print(
        f"  worker: {started.first_fetch - started.spawned:.2f}s from spawn to first fetch (not "
        f"counted); {sent} SENT in {window:.2f}s from its first fetch to the last sent_at; "
        f"statuses {dict(statuses)}; {len(attempts)} attempts; the sink answered {received} "
        "DATA meanwhile"
    )
    print(
        "  stored → sent_at (waiting in the backlog and for the worker to start, not a "
        "latency; the mixed run's paced accept → SENT is one): p50 "
        f"{percentile(queued_to_sent, 0.5):.2f} s, p99 {percentile(queued_to_sent, 0.99):.2f} s"
    )
    print("  " + meter.line() + per_email(meter, worker_rate))
    if not finished or sent < emails:
        print(f"  DEADLINE: {sent} of {emails} SENT within {timeout:g}s of the first fetch")
    return DeliveryResult(worker_rate, raw_rate, sent, emails, raw_store.rate)
