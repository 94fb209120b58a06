"""Mailroom's benchmarks, each against a raw baseline measured in the same run.

Starts the embedded store (FerretDB, on PostgreSQL where the project runs it so) and Redis on
free ports, and the SMTP sink in processes of their own, then runs:

* accept:   SendEmail over gRPC and REST (Envoy) at each concurrency against a raw pymongo
            insert + Redis enqueue (bench/accept.py);
* delivery: one mailroom-worker sending a stored, enqueued batch into the SMTP sink against a
            raw smtplib loop at the worker's concurrency, that loop with the worker's two store
            writes around each send, and the sink alone (bench/delivery.py);
* mixed:    gRPC accepts at concurrency 16 while one worker delivers, against the raw accept
            baseline under the same worker load; and the accept → SENT time at a paced rate
            (bench/mixed.py);
* batch:    one SendEmailBatch of 100 emails against 100 single SendEmail calls, over gRPC and
            REST, in emails/s (bench/batch.py);
* list:     ListEmails first and deep pages for each filter over 100,000 stored emails, against
            the same queries through pymongo and a find by _id (bench/listing.py).

It prints throughput, latency, ratios and a summary against the targets. Numbers, not
assertions: the machine is shared. docs/benchmarks.md says how to read them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench import accept, batch, delivery, listing, mixed
from bench.common import start_store
from devtools.services import ManagedProcess

SECTIONS = ("accept", "delivery", "mixed", "batch", "list")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated benchmarks to run, among %(default)s (default: all)",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="duration of each path in each round"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the paths take turns this many times per concurrency, so a slow spell of the "
        "shared machine hits them alike",
    )
    parser.add_argument("--concurrency", default="1,16,64", help="accept: the load levels")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="MAILROOM_API_PROCESSES of the API under test (default: one per core)",
    )
    parser.add_argument(
        "--emails", type=int, default=2000, help="delivery: the batch (default: %(default)s)"
    )
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=120.0,
        help="delivery: give up waiting for the batch after this many seconds",
    )
    parser.add_argument(
        "--mixed-concurrency", type=int, default=16, help="mixed: accept load threads"
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=50.0,
        help="mixed: SendEmail per second of the accept → SENT measurement (lowered to half "
        "the measured delivery rate when that is below twice it)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="delivery: record the worker with py-spy into this file (.svg flame graph, "
        ".json speedscope, .txt collapsed stacks); needs py-spy in the venv",
    )
    parser.add_argument(
        "--profile-mode",
        choices=("gil", "wall"),
        default="gil",
        help="gil: sample the thread holding the GIL (where the worker's CPU goes); wall: "
        "every thread, waiting included (where its time goes)",
    )
    parser.add_argument(
        "--sink",
        choices=("files", "memory"),
        default="files",
        help="delivery and mixed: the SMTP sink writes .eml files as in make dev (files, the "
        "default) or keeps nothing (memory)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=100, help="batch: emails per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-concurrency", default="1,4", help="batch: the load levels (default: %(default)s)"
    )
    parser.add_argument(
        "--list-emails",
        type=int,
        default=100_000,
        help="list: emails stored (default: %(default)s)",
    )
    parser.add_argument(
        "--list-repeats", type=int, default=7, help="list: calls per cell (default: %(default)s)"
    )
    parser.add_argument(
        "--list-budget",
        type=float,
        default=20.0,
        help="list: stop repeating a cell once it has taken this many seconds",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose among {', '.join(SECTIONS)}")
    return args


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "NOT MET"


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
    # PostgreSQL, which refuses root, runs as the postgres user: it must reach its data dir.
    tmp.chmod(0o711)
    procs: list[ManagedProcess] = []
    summary: list[str] = []
    failed = True
    try:
        store = start_store(tmp, procs)
        print(
            f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
            f"{store.backend} + Redis on 127.0.0.1",
            flush=True,
        )
        if "accept" in args.sections:
            result = accept.run(
                tmp,
                store,
                levels=[int(c) for c in args.concurrency.split(",")],
                rounds=args.rounds,
                seconds=args.seconds,
                api_processes=args.api_processes,
            )
            if result is not None:
                summary.append(
                    f"accept at concurrency 16: grpc/raw {result.grpc_ratio:.2f} (target ≥ 0.6, "
                    f"{verdict(result.grpc_ratio, 0.6)}), rest/raw {result.rest_ratio:.2f} "
                    f"(target ≥ 0.5, {verdict(result.rest_ratio, 0.5)})"
                )
        sinks: dict[str, ManagedProcess] = {}
        for kind in ("files", "memory"):
            if "delivery" in args.sections or ("mixed" in args.sections and args.sink == kind):
                sinks[kind] = delivery.start_sink(tmp, f"sink-{kind}", files=kind == "files")
                procs.append(sinks[kind])
        delivered_rate = None
        if "delivery" in args.sections:
            d = delivery.run(
                tmp,
                store,
                sinks,
                emails=args.emails,
                timeout=args.delivery_timeout,
                profile=args.profile,
                profile_mode=args.profile_mode,
                sink_kind=args.sink,
            )
            delivered_rate = d.worker_rate
            summary.append(
                f"delivery: worker/raw {d.ratio:.2f} (target ≥ 0.5, {verdict(d.ratio, 0.5)}), "
                f"{d.worker_rate:.1f} emails/s per worker process (target ≥ 150, "
                f"{verdict(d.worker_rate, 150)}); raw+store/raw {d.floor:.2f}, the floor of "
                f"two store writes per email; worker/raw+store {d.of_floor:.2f}"
            )
        if "mixed" in args.sections:
            rate = args.paced_rate
            if delivered_rate is not None and delivered_rate < 2 * rate:
                rate = max(delivered_rate / 2, 1.0)
            m = mixed.run(
                tmp,
                store,
                sinks[args.sink],
                concurrency=args.mixed_concurrency,
                rounds=args.rounds,
                seconds=args.seconds,
                api_processes=args.api_processes,
                paced_rate=round(rate),
            )
            summary.append(
                f"mixed at concurrency {args.mixed_concurrency}: grpc/raw {m.ratio:.2f} under "
                f"one worker's load (target ≥ 0.5, {verdict(m.ratio, 0.5)}); "
                f"{m.internal} INTERNAL (HTTP 500), {m.errors} failed calls in all (target: "
                f"none, {'met' if m.errors == 0 else 'NOT MET'})"
            )
        if "batch" in args.sections:
            b = batch.run(
                tmp,
                store,
                size=args.batch_size,
                levels=[int(c) for c in args.batch_concurrency.split(",")],
                rounds=args.rounds,
                seconds=args.seconds,
                api_processes=args.api_processes,
            )
            rates = b.rates
            summary.append(
                f"batch of {b.size} vs {b.size} single SendEmail calls at concurrency "
                f"{b.concurrency}: gRPC {rates['grpc batch']:.0f} vs {rates['grpc single']:.0f} "
                f"emails/s (ratio {b.ratio('grpc'):.2f}); REST {rates['rest batch']:.0f} vs "
                f"{rates['rest single']:.0f} emails/s (ratio {b.ratio('rest'):.2f}); gRPC with "
                f"a key per email {rates['grpc+key batch']:.0f} vs "
                f"{rates['grpc+key single']:.0f} emails/s (ratio {b.ratio('grpc+key'):.2f})"
            )
        if "list" in args.sections:
            listed = listing.run(
                tmp,
                store,
                emails=args.list_emails,
                repeats=args.list_repeats,
                budget=args.list_budget,
            )
            met = [n for n, ms in listed.first_ms.items() if ms is not None and ms < 100]
            summary.append(
                f"list over {args.list_emails:,} emails: first page under 100 ms for "
                f"{len(met)} of {len(listed.first_ms)} filters ({', '.join(met) or 'none'}); "
                f"find by _id {listed.baseline_ms:.1f} ms"
            )
        print("\nsummary:")
        for line in summary:
            print("  " + line)
        failed = False
    finally:
        for proc in reversed(procs):
            proc.stop()
        if failed or args.keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
