"""What the benchmarks share: the backing services, the load loop, the raw accept baseline."""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pymongo
import redis
from bson import ObjectId

from core.store.documents import utcnow
from core.store.repository import NewEmail, new_email_document
from devtools import services
from devtools.services import ManagedProcess, free_port, start_ferretdb, start_redis

BIN = Path(sys.executable).parent
BODY = {
    "to": ["alice@example.com", "bob@example.com"],
    "cc": ["carol@example.com"],
    "title": "Your receipt #1234",
    "content": "Thanks for your order. " * 20,
}
RAW_EMAIL = NewEmail(
    to=BODY["to"],
    cc=BODY["cc"],
    subject=BODY["title"],
    text=BODY["content"],
    from_address="Mailroom <mailroom@localhost>",
)
# The worker's queue (Settings.queue_name) and the API's Message-ID domain, by default.
WORKER_QUEUE = "mail"
MESSAGE_ID_DOMAIN = "mailroom.local"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class Cell:
    """What the load of one path at one concurrency measured, over all rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    # Failures by kind: a gRPC status code name, an HTTP status, or an exception type.
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return str(exc.code().name)
    if isinstance(exc, HttpStatusError):
        return f"HTTP {exc.status}"
    return type(exc).__name__


class HttpStatusError(RuntimeError):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def run_load(call: Callable[[int], None], concurrency: int, seconds: float, cell: Cell) -> None:
    """Call ``call(i)`` from threads ``i`` < ``concurrency`` for ``seconds``; add to ``cell``.

    The index lets a path keep one client per thread across rounds (connected once, warm).
    """
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(index: int) -> None:
        local: list[float] = []
        kinds: Counter[str] = Counter()
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                call(index)
            except Exception as exc:
                kinds[failure_kind(exc)] += 1
                continue
            local.append(time.perf_counter() - start)
        with lock:
            cell.latencies.extend(local)
            cell.errors += sum(kinds.values())
            cell.kinds.update(kinds)

    began = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop, i) for i in range(concurrency)]:
            future.result()
    cell.elapsed += time.monotonic() - began


def raw_call(
    db: pymongo.database.Database, client: redis.Redis, *, queue: str = "bench"
) -> Callable[[int], None]:
    """The accept baseline: one insert plus one Dramatiq-shaped enqueue, no API in between.

    With ``queue`` = the worker's queue, a running worker delivers these emails like the API's.
    """

    def call(_index: int) -> None:
        oid = ObjectId()
        # The very document the API stores for BODY (same fields, same size).
        db.emails.insert_one(
            new_email_document(
                RAW_EMAIL, message_id_domain=MESSAGE_ID_DOMAIN, email_id=oid, now=utcnow()
            )
        )
        message_id = str(uuid.uuid4())
        payload = json.dumps(
            {
                "queue_name": queue,
                "actor_name": "deliver",
                "args": [str(oid)],
                "kwargs": {},
                "options": {"redis_message_id": message_id},
                "message_id": message_id,
                "message_timestamp": int(time.time() * 1000),
            }
        )
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"dramatiq:{queue}.msgs", message_id, payload)
        pipe.rpush(f"dramatiq:{queue}", message_id)
        pipe.execute()

    return call


# -- processes ----------------------------------------------------------------------------------


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    for child in children(pid):
        found += descendants(child)
    return found


def api_server_pids(pid: int) -> list[int]:
    """The API's server processes: the forked children of a supervisor, or ``pid`` itself."""
    return children(pid) or [pid]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids``, with that of the children each has reaped.

    The reaped children's share keeps a tree's total from falling when a process in it exits
    (a PostgreSQL backend whose connection closed): its time moves into its parent's.
    """
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICK


class CpuMeter:
    """CPU used by named process trees while the meter runs, in cores (summed over its runs)."""

    def __init__(self, trees: dict[str, int | None]) -> None:
        self.trees = {name: pid for name, pid in trees.items() if pid}
        self._before: dict[str, float] = {}
        self._began = 0.0
        self._used: dict[str, float] = {}
        self._wall = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(descendants(pid)) for name, pid in self.trees.items()}
        sample["bench"] = cpu_seconds([os.getpid()])
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._began = time.monotonic()

    def stop(self) -> None:
        after = self._sample()
        self._wall += time.monotonic() - self._began
        for name, used in after.items():
            self._used[name] = self._used.get(name, 0.0) + used - self._before.get(name, 0.0)

    @property
    def cores(self) -> dict[str, float]:
        return {k: v / self._wall for k, v in self._used.items()} if self._wall else {}

    def line(self, prefix: str = "CPU in cores: ") -> str:
        parts = [f"{name} {cores:.2f}" for name, cores in self.cores.items()]
        return prefix + ", ".join(parts) + f" (machine: {os.cpu_count()} cores)"


# -- the backing services -----------------------------------------------------------------------


@dataclass
class Store:
    """FerretDB (on PostgreSQL when the project's services provide it) and Redis."""

    procs: list[ManagedProcess]
    mongo_base: str
    redis_base: str
    backend: str
    ferret: ManagedProcess
    postgres: ManagedProcess | None

    def mongo_uri(self, database: str) -> str:
        return self.mongo_base.rstrip("/") + "/" + database

    def redis_url(self, db: int) -> str:
        return self.redis_base.rsplit("/", 1)[0] + f"/{db}"

    def pids(self) -> dict[str, int | None]:
        pids = {"ferretdb": self.ferret.pid}
        if self.postgres is not None:
            pids["postgres"] = self.postgres.pid
        pids["redis"] = self.procs[-1].pid
        return pids


def start_store(tmp: Path, procs: list[ManagedProcess]) -> Store:
    """Start the embedded store the way the project's own services module does today."""
    postgres = None
    start_postgres = getattr(services, "start_postgres", None)
    if start_postgres is not None:
        postgres = start_postgres(free_port(), tmp / "postgres")
        procs.append(postgres)
        ferret = start_ferretdb(free_port(), tmp / "ferretdb", postgresql_url=postgres.url)
        backend = "FerretDB on PostgreSQL"
    else:
        ferret = start_ferretdb(free_port(), tmp / "ferretdb")
        backend = "FerretDB on SQLite"
    procs.append(ferret)
    rds = start_redis(free_port(), tmp / "redis")
    procs.append(rds)
    return Store(procs, ferret.uri, rds.url, backend, ferret, postgres)


def start_api(
    tmp: Path, store: Store, *, database: str, redis_db: int, processes: int, name: str = "api"
) -> tuple[ManagedProcess, str]:
    """Start ``mailroom-api`` on a free port; return it and its gRPC target."""
    port = free_port()
    env = {
        "MAILROOM_MONGODB_URI": store.mongo_uri(database),
        "MAILROOM_REDIS_URL": store.redis_url(redis_db),
        "MAILROOM_GRPC_HOST": "127.0.0.1",
        "MAILROOM_GRPC_PORT": str(port),
        "MAILROOM_LOG_LEVEL": "WARNING",
        "MAILROOM_API_PROCESSES": str(processes),
    }
    target = f"127.0.0.1:{port}"

    def ready() -> bool:
        with grpc.insecure_channel(target) as ch:
            grpc.channel_ready_future(ch).result(timeout=1)
        return True

    api = ManagedProcess(
        name, [str(BIN / "mailroom-api")], log_path=tmp / f"{name}.log", ready=ready, env=env
    ).start()
    return api, target


def grpc_stubs(target: str, count: int) -> tuple[list[grpc.Channel], list[object]]:
    """One channel (so one connection) per load thread, as independent client services have."""
    from mailroom.v1 import mail_pb2_grpc

    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    return channels, [mail_pb2_grpc.MailServiceStub(channel) for channel in channels]


def ensure_indexes(uri: str) -> None:
    """Create the collections' indexes as the API does at start-up (a worker alone does not)."""
    from core.store.connection import connect
    from core.store.connection import ensure_indexes as create

    connect(uri, timeout_ms=5000)
    create()


def start_api_behind_envoy(
    tmp: Path,
    store: Store,
    procs: list[ManagedProcess],
    *,
    database: str,
    redis_db: int,
    processes: int,
    name: str = "api",
    envoy_config: str = "envoy.yaml",
) -> tuple[str, int, dict[str, int | None]]:
    """Start ``mailroom-api`` and Envoy's transcoder in front of it, appended to ``procs``.

    Returns:
        The API's gRPC target, Envoy's REST port, and the process trees to meter the CPU of.
    """
    from devtools.envoy_config import write_envoy_config
    from devtools.services import start_envoy

    api, target = start_api(
        tmp, store, database=database, redis_db=redis_db, processes=processes, name=name
    )
    procs.append(api)
    rest_port, admin_port = free_port(), free_port()
    config = write_envoy_config(
        tmp / envoy_config,
        listen_port=rest_port,
        admin_port=admin_port,
        api_port=int(target.rsplit(":", 1)[1]),
    )
    envoy = start_envoy(config, admin_port)
    procs.append(envoy)
    return target, rest_port, {"api": api.pid, "envoy": envoy.pid, **store.pids()}


class RestClients:
    """A keep-alive ``http.client`` connection per load thread, to Envoy's REST port.

    http.client, not httpx: the load generator shares the cores with what it measures, and
    httpx costs about twice its CPU per call. Closed connections reconnect on the next request.
    """

    HEADERS = {"content-type": "application/json"}

    def __init__(self) -> None:
        self.connections: list[http.client.HTTPConnection] = []

    def open(self, port: int, count: int, timeout: float) -> None:
        """Make ``count`` connections to ``127.0.0.1:port``."""
        self.connections = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) for _ in range(count)
        ]

    def post(self, index: int, path: str, body: bytes, expected: int) -> bytes:
        """POST ``body`` on connection ``index``; the answer's body.

        Raises:
            HttpStatusError: The status was not ``expected``.
        """
        conn = self.connections[index]
        try:
            conn.request("POST", path, body=body, headers=self.HEADERS)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # reconnects on the next request
            raise
        if resp.status != expected:
            raise HttpStatusError(resp.status)
        return payload

    def close(self) -> None:
        """Close every connection."""
        for conn in self.connections:
            conn.close()


def measure_level(
    paths: Sequence[tuple[str, Callable[[int], None]]],
    level: int,
    rounds: int,
    seconds: float,
    trees: dict[str, int | None],
    results: dict[tuple[str, int], Cell],
    meters: dict[tuple[str, int], CpuMeter],
) -> None:
    """Load every path at one concurrency, ``rounds`` times each, metering the CPU.

    Each round starts with another path, so none always follows the same one.
    """
    for round_ in range(rounds):
        shift = round_ % len(paths)
        for name, call in [*paths[shift:], *paths[:shift]]:
            meter = meters.setdefault((name, level), CpuMeter(trees))
            meter.start()
            run_load(call, level, seconds, results.setdefault((name, level), Cell()))
            meter.stop()
