"""Benchmark of the accept path: SendEmail over gRPC and REST against a raw baseline.

Starts FerretDB, Redis, the API (one server process per core) and Envoy on free ports, then for
each concurrency (1, 16, 64) lets three paths take turns, a few rounds of a few seconds each:

* raw:  the same work done straight — a pymongo ``insert_one`` of the document the API stores
        plus a Dramatiq-shaped enqueue with redis-py — against the same servers;
* grpc: ``SendEmail`` to the API, each load thread a client with its own channel;
* rest: ``POST /api/email`` through Envoy's transcoder, a keep-alive connection per thread.

It prints throughput and p50/p99 latency, the ratios to the raw baseline measured in the same
run, and each API process's resident memory. Numbers, not assertions: the machine is shared.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pymongo
import redis
from bson import ObjectId

from mailroom.v1 import mail_pb2, mail_pb2_grpc
from server.devtools.envoy_config import write_envoy_config
from server.devtools.services import ManagedProcess, start_envoy, start_ferretdb, start_redis
from server.store.documents import utcnow
from server.store.repository import NewEmail, new_email_document

BIN = Path(sys.executable).parent
BODY = {
    "to": ["alice@example.com", "bob@example.com"],
    "cc": ["carol@example.com"],
    "title": "Your receipt #1234",
    "content": "Thanks for your order. " * 20,
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cell:
    """What the load of one path at one concurrency measured, over all rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def run_load(call: Callable[[int], None], concurrency: int, seconds: float, cell: Cell) -> None:
    """Call ``call(i)`` from threads ``i`` < ``concurrency`` for ``seconds``; add to ``cell``.

    The index lets a path keep one client per thread across rounds (connected once, warm).
    """
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(index: int) -> None:
        local: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                call(index)
            except Exception:
                failed += 1
                continue
            local.append(time.perf_counter() - start)
        with lock:
            cell.latencies.extend(local)
            cell.errors += failed

    began = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop, i) for i in range(concurrency)]:
            future.result()
    cell.elapsed += time.monotonic() - began


RAW_EMAIL = NewEmail(
    to=BODY["to"],
    cc=BODY["cc"],
    subject=BODY["title"],
    text=BODY["content"],
    from_address="Mailroom <mailroom@localhost>",
)


def raw_call(db: pymongo.database.Database, client: redis.Redis) -> Callable[[int], None]:
    """The baseline: one insert plus one Dramatiq-shaped enqueue, no API in between."""

    def call(_index: int) -> None:
        oid = ObjectId()
        # The very document the API stores for BODY (same fields, same size).
        db.emails.insert_one(
            new_email_document(RAW_EMAIL, message_id_domain="bench", email_id=oid, now=utcnow())
        )
        message_id = str(uuid.uuid4())
        payload = json.dumps(
            {
                "queue_name": "bench",
                "actor_name": "deliver",
                "args": [str(oid)],
                "kwargs": {},
                "options": {"redis_message_id": message_id},
                "message_id": message_id,
                "message_timestamp": int(time.time() * 1000),
            }
        )
        pipe = client.pipeline(transaction=False)
        pipe.hset("dramatiq:bench.msgs", message_id, payload)
        pipe.rpush("dramatiq:bench", message_id)
        pipe.execute()

    return call


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def api_server_pids(pid: int) -> list[int]:
    """The API's server processes: the forked children of a supervisor, or ``pid`` itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children] or [pid]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="duration of each path in each round"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="raw, gRPC and REST take turns this many times per concurrency, so a slow spell "
        "of the shared machine hits all three alike",
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="MAILROOM_API_PROCESSES of the API under test (default: one per core)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    procs: list[ManagedProcess] = []
    try:
        ferret = start_ferretdb(free_port(), tmp / "ferretdb")
        procs.append(ferret)
        rds = start_redis(free_port(), tmp / "redis")
        procs.append(rds)
        mongo_uri = ferret.uri.rstrip("/") + "/mailroom_bench"
        api_port = free_port()
        env = {
            "MAILROOM_MONGODB_URI": mongo_uri,
            "MAILROOM_REDIS_URL": rds.url,
            "MAILROOM_GRPC_HOST": "127.0.0.1",
            "MAILROOM_GRPC_PORT": str(api_port),
            "MAILROOM_LOG_LEVEL": "WARNING",
            "MAILROOM_API_PROCESSES": str(args.api_processes),
        }
        target = f"127.0.0.1:{api_port}"

        def api_ready() -> bool:
            with grpc.insecure_channel(target) as ch:
                grpc.channel_ready_future(ch).result(timeout=1)
            return True

        api = ManagedProcess(
            "api", [str(BIN / "mailroom-api")], log_path=tmp / "api.log", ready=api_ready, env=env
        ).start()
        procs.append(api)
        rest_port, admin_port = free_port(), free_port()
        config = write_envoy_config(
            tmp / "envoy.yaml", listen_port=rest_port, admin_port=admin_port, api_port=api_port
        )
        procs.append(start_envoy(config, admin_port))

        mongo = pymongo.MongoClient(mongo_uri, maxPoolSize=128)
        db = mongo.get_default_database()
        rclient = redis.Redis.from_url(rds.url, max_connections=128)
        # Each load thread is a client of its own (its own channel, so its own connection), as
        # the internal services calling Mailroom are; with several API processes the kernel
        # spreads those connections among them. Made once per thread index, kept warm.
        most = max(levels)
        channels = [
            grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(most)
        ]
        stubs = [mail_pb2_grpc.MailServiceStub(channel) for channel in channels]
        request = mail_pb2.SendEmailRequest(**BODY)

        def grpc_call(index: int) -> None:
            stubs[index].SendEmail(request, timeout=10)

        # http.client, a keep-alive connection per load thread: the load generator shares the
        # two cores with what it measures, and httpx costs about twice its CPU per call.
        connections = [
            http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10) for _ in range(most)
        ]
        body = json.dumps(BODY).encode()
        headers = {"content-type": "application/json"}

        def rest_call(index: int) -> None:
            conn = connections[index]
            try:
                conn.request("POST", "/api/email", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                raise
            if resp.status != 201:
                raise RuntimeError(resp.status)

        # Warm up every path and connect every client (FerretDB's tables, Envoy's clusters).
        for call in (raw_call(db, rclient), grpc_call, rest_call):
            run_load(call, most, 0.5, Cell())

        print(
            f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
            f"{args.rounds} rounds of {args.seconds:g}s per path and concurrency; "
            f"{args.api_processes} API processes; FerretDB (SQLite) + Redis on 127.0.0.1"
        )
        columns = ("path", "conc", "req/s", "p50 ms", "p99 ms", "errors", "ratio")
        header = f"{columns[0]:<5} " + " ".join(f"{c:>8}" for c in columns[1:])
        print(header)
        print("-" * len(header))
        results: dict[tuple[str, int], Cell] = {}
        paths = [("raw", raw_call(db, rclient)), ("grpc", grpc_call), ("rest", rest_call)]
        for level in levels:
            for round_ in range(args.rounds):
                # Each round starts with another path, so none always follows the same one.
                for name, call in paths[round_ % 3 :] + paths[: round_ % 3]:
                    run_load(call, level, args.seconds, results.setdefault((name, level), Cell()))
            for name, _call in paths:
                cell = results[(name, level)]
                ratio = cell.rps / results[("raw", level)].rps if results[("raw", level)].rps else 0
                cells = (level, f"{cell.rps:.1f}", f"{cell.percentile_ms(0.5):.2f}")
                cells += (f"{cell.percentile_ms(0.99):.2f}", cell.errors, f"{ratio:.2f}")
                print(f"{name:<5} " + " ".join(f"{c:>8}" for c in cells), flush=True)
        for pid in api_server_pids(api.pid or 0):
            rss, peak = rss_mb(pid)
            print(
                f"API process {pid} resident memory: {rss:.0f} MB now, {peak:.0f} MB peak "
                "(target < 150 MB)"
            )
        if 16 in levels and results[("raw", 16)].rps:
            grpc_ratio = results[("grpc", 16)].rps / results[("raw", 16)].rps
            rest_ratio = results[("rest", 16)].rps / results[("raw", 16)].rps
            print(f"at concurrency 16: grpc/raw = {grpc_ratio:.2f} (target ≥ 0.6), ", end="")
            print(f"rest/raw = {rest_ratio:.2f} (target ≥ 0.5)")
        for conn in connections:
            conn.close()
        for channel in channels:
            channel.close()
        mongo.close()
        rclient.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
