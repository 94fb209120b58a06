"""Batches: one SendEmailBatch of 100 emails against 100 single SendEmail calls.

Both paths run against the same API, store and Redis in the same run, over gRPC and over REST
(Envoy), at each concurrency; they take turns, a few rounds of a few seconds each:

* single: 100 ``SendEmail`` calls one after another (a load thread's unit of work);
* batch:  one ``SendEmailBatch`` carrying the same 100 emails.

``grpc+key`` repeats both over gRPC with a fresh idempotency key on each email, as the SDK's
``send_email_batch`` sends them (the batch then also binds 100 keys in bulk).

The figure is accepted emails per second, and batch/single: what a caller gains by batching.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BODY,
    Cell,
    CpuMeter,
    RestClients,
    Store,
    grpc_stubs,
    measure_level,
    run_load,
    start_api_behind_envoy,
)
from devtools.services import ManagedProcess


@dataclass
class BatchResult:
    """Emails per second of each path at the first concurrency measured."""

    size: int
    concurrency: int
    rates: dict[str, float]

    def ratio(self, transport: str) -> float:
        """Batch over single emails/s for ``grpc``, ``rest`` or ``grpc+key``."""
        single = self.rates.get(f"{transport} single", 0.0)
        return self.rates.get(f"{transport} batch", 0.0) / single if single else 0.0


class IncompleteBatch(RuntimeError):
    """A batch answered with fewer accepted emails than it carried."""


def run(
    tmp: Path,
    store: Store,
    *,
    size: int,
    levels: list[int],
    rounds: int,
    seconds: float,
    api_processes: int,
) -> BatchResult:
    """Measure both paths over both transports; print a table; return the rates."""
    from mailroom.v1 import mail_pb2

    database, redis_db = "mailroom_batch", 4
    procs: list[ManagedProcess] = []
    channels: list[Any] = []
    rest = RestClients()
    try:
        target, rest_port, trees = start_api_behind_envoy(
            tmp,
            store,
            procs,
            database=database,
            redis_db=redis_db,
            processes=api_processes,
            name="api-batch",
            envoy_config="envoy-batch.yaml",
        )

        most = max(levels)
        channels, made = grpc_stubs(target, most)
        stubs: list[Any] = list(made)
        single = mail_pb2.SendEmailRequest(**BODY)  # type: ignore[arg-type]
        batch = mail_pb2.SendEmailBatchRequest(emails=[single] * size)

        def grpc_single(index: int) -> None:
            for _ in range(size):
                stubs[index].SendEmail(single, timeout=10)

        def grpc_batch(index: int) -> None:
            reply = stubs[index].SendEmailBatch(batch, timeout=30)
            if reply.accepted_count != size:
                raise IncompleteBatch(f"{reply.accepted_count} of {size} accepted")

        def keyed(index: int) -> mail_pb2.SendEmailRequest:
            request = mail_pb2.SendEmailRequest()
            request.CopyFrom(single)
            request.idempotency_key = f"bench-{uuid.uuid4().hex}-{index}"
            return request

        def keyed_single(index: int) -> None:
            for _ in range(size):
                stubs[index].SendEmail(keyed(index), timeout=10)

        def keyed_batch(index: int) -> None:
            request = mail_pb2.SendEmailBatchRequest(emails=[keyed(index) for _ in range(size)])
            reply = stubs[index].SendEmailBatch(request, timeout=30)
            if reply.accepted_count != size:
                raise IncompleteBatch(f"{reply.accepted_count} of {size} accepted")

        rest.open(rest_port, most, timeout=30)
        single_body = json.dumps(BODY).encode()
        batch_body = json.dumps({"emails": [BODY] * size}).encode()

        def rest_single(index: int) -> None:
            for _ in range(size):
                rest.post(index, "/api/email", single_body, 201)

        def rest_batch(index: int) -> None:
            reply = json.loads(rest.post(index, "/api/emails:batch", batch_body, 200))
            accepted = reply.get("accepted_count", reply.get("acceptedCount", 0))
            if accepted != size:
                raise IncompleteBatch(f"{accepted} of {size} accepted")

        paths = [
            ("grpc single", grpc_single),
            ("grpc batch", grpc_batch),
            ("rest single", rest_single),
            ("rest batch", rest_batch),
            ("grpc+key single", keyed_single),
            ("grpc+key batch", keyed_batch),
        ]
        # Warm up every path and connect every client (FerretDB's tables, Envoy's clusters).
        for _name, call in paths:
            run_load(call, most, 0.5, Cell())

        print(
            f"\nbatch: {size} emails per unit of work (one batch, or {size} SendEmail calls); "
            f"{rounds} rounds of {seconds:g}s per path and concurrency; {api_processes} API "
            "processes"
        )
        columns = ("path", "conc", "emails/s", "p50 ms", "p99 ms", "errors", "ratio")
        header = f"{columns[0]:<15} " + " ".join(f"{c:>9}" for c in columns[1:])
        print(header)
        print("-" * len(header))
        results: dict[tuple[str, int], Cell] = {}
        meters: dict[tuple[str, int], CpuMeter] = {}
        for level in levels:
            measure_level(paths, level, rounds, seconds, trees, results, meters)
            for name, _call in paths:
                cell = results[(name, level)]
                transport = name.split()[0]
                base = results[(f"{transport} single", level)].rps
                ratio = cell.rps / base if base else 0.0
                cells: tuple[object, ...] = (level, f"{cell.rps * size:.1f}")
                cells += (f"{cell.percentile_ms(0.5):.1f}", f"{cell.percentile_ms(0.99):.1f}")
                cells += (cell.errors, f"{ratio:.2f}")
                line = f"{name:<15} " + " ".join(f"{c:>9}" for c in cells)
                if cell.kinds:
                    line += "  " + ", ".join(f"{k} {v}" for k, v in cell.kinds.most_common())
                print(line, flush=True)
        print(f"(latency: of one unit of work, i.e. {size} emails; ratio: batch/single)")
        print("CPU in cores while each path ran:")
        for (name, level), meter in meters.items():
            print(meter.line(f"  {name:<15} {level:>3}: "))
        first = levels[0]
        return BatchResult(
            size, first, {name: results[(name, first)].rps * size for name, _call in paths}
        )
    finally:
        rest.close()
        for channel in channels:
            channel.close()
        for proc in reversed(procs):
            proc.stop()
