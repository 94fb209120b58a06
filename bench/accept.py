"""The accept path: SendEmail over gRPC and REST against a raw baseline.

For each concurrency four paths take turns, a few rounds of a few seconds each:

* raw:  the same work done straight — a pymongo ``insert_one`` of the document the API stores
        plus a Dramatiq-shaped enqueue with redis-py — against the same servers;
* grpc: ``SendEmail`` to the API, each load thread a client with its own channel;
* grpc+key: the same with a fresh idempotency key per call, as the SDK sends every email (one
        more insert per call, the key's; no target: it shows what SDK users get);
* rest: ``POST /api/email`` through Envoy's transcoder, a keep-alive connection per thread.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import redis

from bench.common import (
    BODY,
    Cell,
    CpuMeter,
    RestClients,
    Store,
    api_server_pids,
    grpc_stubs,
    measure_level,
    raw_call,
    rss_mb,
    run_load,
    start_api_behind_envoy,
)
from devtools.services import ManagedProcess


@dataclass
class AcceptResult:
    grpc_ratio: float
    rest_ratio: float
    grpc_rps: float
    raw_rps: float


def run(
    tmp: Path,
    store: Store,
    *,
    levels: list[int],
    rounds: int,
    seconds: float,
    api_processes: int,
) -> AcceptResult | None:
    from mailroom.v1 import mail_pb2

    database, redis_db = "mailroom_accept", 0
    procs: list[ManagedProcess] = []
    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        store.mongo_uri(database), maxPoolSize=128
    )
    rclient = redis.Redis.from_url(store.redis_url(redis_db), max_connections=128)
    channels: list[Any] = []
    rest = RestClients()
    try:
        target, rest_port, trees = start_api_behind_envoy(
            tmp, store, procs, database=database, redis_db=redis_db, processes=api_processes
        )

        db = mongo.get_default_database()
        # Each load thread is a client of its own (its own channel, so its own connection), as
        # the internal services calling Mailroom are; with several API processes the kernel
        # spreads those connections among them. Made once per thread index, kept warm.
        most = max(levels)
        channels, stubs = grpc_stubs(target, most)
        request = mail_pb2.SendEmailRequest(**BODY)

        def grpc_call(index: int) -> None:
            stubs[index].SendEmail(request, timeout=10)

        def keyed_call(index: int) -> None:
            # As the SDK sends every email: with a fresh idempotency key (one more insert).
            key = (("idempotency-key", uuid.uuid4().hex),)
            stubs[index].SendEmail(request, metadata=key, timeout=10)

        rest.open(rest_port, most, timeout=10)
        body = json.dumps(BODY).encode()

        def rest_call(index: int) -> None:
            rest.post(index, "/api/email", body, 201)

        # Warm up every path and connect every client (FerretDB's tables, Envoy's clusters).
        for call in (raw_call(db, rclient), grpc_call, keyed_call, rest_call):
            run_load(call, most, 0.5, Cell())

        print(
            f"\naccept: {rounds} rounds of {seconds:g}s per path and concurrency; "
            f"{api_processes} API processes"
        )
        columns = ("path", "conc", "req/s", "p50 ms", "p99 ms", "errors", "ratio")
        header = f"{columns[0]:<8} " + " ".join(f"{c:>8}" for c in columns[1:])
        print(header)
        print("-" * len(header))
        results: dict[tuple[str, int], Cell] = {}
        meters: dict[tuple[str, int], CpuMeter] = {}
        paths = [
            ("raw", raw_call(db, rclient)),
            ("grpc", grpc_call),
            ("grpc+key", keyed_call),
            ("rest", rest_call),
        ]
        for level in levels:
            measure_level(paths, level, rounds, seconds, trees, results, meters)
            for name, _call in paths:
                cell = results[(name, level)]
                raw = results[("raw", level)].rps
                ratio = cell.rps / raw if raw else 0
                cells = (level, f"{cell.rps:.1f}", f"{cell.percentile_ms(0.5):.2f}")
                cells += (f"{cell.percentile_ms(0.99):.2f}", cell.errors, f"{ratio:.2f}")
                line = f"{name:<8} " + " ".join(f"{c:>8}" for c in cells)
                if cell.kinds:
                    line += "  " + ", ".join(f"{k} {v}" for k, v in cell.kinds.most_common())
                print(line, flush=True)
        print("CPU in cores while each path ran:")
        for (name, level), meter in meters.items():
            print(meter.line(f"  {name:<8} {level:>3}: "))
        for pid in api_server_pids(trees["api"] or 0):
            rss, peak = rss_mb(pid)
            print(
                f"API process {pid} resident memory: {rss:.0f} MB now, {peak:.0f} MB peak "
                "(target < 150 MB)"
            )
        if 16 not in levels or not results[("raw", 16)].rps:
            return None
        raw16 = results[("raw", 16)].rps
        return AcceptResult(
            results[("grpc", 16)].rps / raw16,
            results[("rest", 16)].rps / raw16,
            results[("grpc", 16)].rps,
            raw16,
        )
    finally:
        rest.close()
        for channel in channels:
            channel.close()
        mongo.close()
        rclient.close()
        for proc in reversed(procs):
            proc.stop()
