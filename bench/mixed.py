"""Mixed load: accepting over gRPC while one worker delivers what is accepted.

The API and one ``mailroom-worker`` share a database and a queue; the worker sends into the SMTP
sink. Two parts:

* paced: SendEmail at a steady rate below the worker's capacity, then the time from accept (the
  email's ``created_at``, written by the API) to SENT (``sent_at``, written by the worker) —
  the latency a client sees when the worker keeps up;
* saturated: raw and gRPC take turns at concurrency 16, as in the accept benchmark, while the
  worker delivers flat out; the raw baseline enqueues on the worker's queue, so the worker has
  the same work under both. The accept ratio gRPC/raw and every failed call, by status code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pymongo
import redis
from bson import ObjectId

from bench.common import (
    BODY,
    WORKER_QUEUE,
    Cell,
    CpuMeter,
    Store,
    grpc_stubs,
    percentile,
    raw_call,
    run_load,
    start_api,
)
from bench.delivery import sink_count, sink_port, start_worker, wait_for_sink, worker_env
from devtools.services import ManagedProcess


@dataclass
class MixedResult:
    grpc_rps: float
    raw_rps: float
    errors: int
    internal: int

    @property
    def ratio(self) -> float:
        return self.grpc_rps / self.raw_rps if self.raw_rps else 0.0


def paced(stub: Any, request: Any, rate: float, seconds: float) -> tuple[list[str], int]:
    """SendEmail ``rate`` times a second for ``seconds`` from one thread; ids and failures."""
    ids: list[str] = []
    failures = 0
    count = int(rate * seconds)
    began = time.monotonic()
    for i in range(count):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            ids.append(stub.SendEmail(request, timeout=10).id)
        except grpc.RpcError:
            failures += 1
    return ids, failures


def run(
    tmp: Path,
    store: Store,
    sink: ManagedProcess,
    *,
    concurrency: int,
    rounds: int,
    seconds: float,
    api_processes: int,
    paced_rate: float,
    paced_seconds: float = 5.0,
) -> MixedResult:
    from mailroom.v1 import mail_pb2

    database, redis_db = "mailroom_mixed", 2
    procs: list[ManagedProcess] = []
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        store.mongo_uri(database), maxPoolSize=128
    )
    rclient = redis.Redis.from_url(store.redis_url(redis_db), max_connections=128)
    channels: list[grpc.Channel] = []
    try:
        api, target = start_api(
            tmp, store, database=database, redis_db=redis_db, processes=api_processes,
            name="api-mixed",
        )  # fmt: skip
        procs.append(api)
        env = worker_env(store, database, redis_db, sink_port(sink))
        worker = start_worker(tmp, env, store.redis_url(redis_db), name="worker-mixed").process
        procs.append(worker)
        db = mongo.get_default_database()
        channels, stubs = grpc_stubs(target, concurrency)
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=10)
        request = mail_pb2.SendEmailRequest(**BODY)

        # Paced: the worker is idle and keeps up.
        before = sink_count(sink)
        ids, paced_failures = paced(stubs[0], request, paced_rate, paced_seconds)
        deadline = time.monotonic() + 60
        wait_for_sink(sink, before + len(ids), deadline)
        oids = [ObjectId(i) for i in ids]
        while True:
            paced_docs = list(
                db.emails.find({"_id": {"$in": oids}}, {"status": 1, "created_at": 1, "sent_at": 1})
            )
            sent = sum(1 for d in paced_docs if d["status"] == "SENT")
            if sent >= len(oids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        latencies = [
            (d["sent_at"] - d["created_at"]).total_seconds() for d in paced_docs if d.get("sent_at")
        ]

        # Saturated: raw and gRPC take turns while the worker delivers.
        def grpc_call(index: int) -> None:
            stubs[index].SendEmail(request, timeout=10)

        paths = [("raw", raw_call(db, rclient, queue=WORKER_QUEUE)), ("grpc", grpc_call)]
        for _name, call in paths:
            run_load(call, concurrency, 0.5, Cell())
        cells: dict[str, Cell] = {}
        meter = CpuMeter({"api": api.pid, "worker": worker.pid, **store.pids(), "sink": sink.pid})
        sink_before = sink_count(sink)
        began = time.monotonic()
        meter.start()
        for round_ in range(rounds):
            for name, call in paths[round_ % 2 :] + paths[: round_ % 2]:
                run_load(call, concurrency, seconds, cells.setdefault(name, Cell()))
        meter.stop()
        delivered = sink_count(sink) - sink_before
        delivered_rate = delivered / (time.monotonic() - began)
    finally:
        for channel in channels:
            channel.close()
        mongo.close()
        rclient.close()
        for proc in reversed(procs):
            proc.stop(timeout=30)

    print(
        f"\nmixed: one mailroom-worker (defaults) delivering into the sink while the API "
        f"({api_processes} processes) accepts"
    )
    print(
        f"  paced: {len(ids)} SendEmail at {paced_rate:g}/s ({paced_failures} failed); "
        f"{sent} SENT; accept (created_at) → SENT (sent_at): "
        f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
        f"max {max(latencies, default=0) * 1000:.0f} ms"
    )
    header = f"{'path':<5} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    header += f"{'errors':>6} {'ratio':>6}  failures"
    print(header)
    print("-" * len(header))
    raw_rps = cells["raw"].rps
    for name in ("raw", "grpc"):
        cell = cells[name]
        ratio = cell.rps / raw_rps if raw_rps else 0.0
        line = f"{name:<5} {concurrency:>5} {cell.rps:>8.1f} {cell.percentile_ms(0.5):>8.2f} "
        line += f"{cell.percentile_ms(0.99):>8.2f} {cell.errors:>6} {ratio:>6.2f}  "
        line += ", ".join(f"{k} {v}" for k, v in cell.kinds.most_common()) or "none"
        print(line)
    print(
        f"  the worker sent {delivered_rate:.1f} emails/s meanwhile ({delivered} received by the "
        "sink)"
    )
    print("  " + meter.line())
    grpc_cell = cells["grpc"]
    return MixedResult(grpc_cell.rps, raw_rps, grpc_cell.errors, grpc_cell.kinds.get("INTERNAL", 0))
