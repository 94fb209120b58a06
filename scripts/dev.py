"""Run all of Mailroom in the foreground on local defaults (``make dev``).

Starts, in order: PostgreSQL (a cluster of its own in ``var/postgres`` on port 15432, created by
the first run and reused by the next), FerretDB on it (port 27017; its state in
``var/ferretdb``), redis-server (``var/redis``), the SMTP sink (messages in ``var/mail``),
``mailroom-api``, Envoy (config rendered to ``var/envoy.yaml``; REST on 8080, admin on 9901), one
``mailroom-worker`` and the ``mailroom-scheduler``. Each child's output is printed with its name
in front and also kept in ``var/log/<name>.log``.

``MAILROOM_MONGODB_URI`` / ``MAILROOM_REDIS_URL`` in the environment point Mailroom at existing
servers instead of starting PostgreSQL and FerretDB / Redis. Ctrl-C, SIGTERM or SIGHUP (a closed
terminal) stops everything; if one child exits, the script says which and stops the others (exit
status 1). Killed outright (SIGKILL), it cannot: then the kernel sends each child its stop signal
(Linux, see ``devtools.processes``), so no orphan keeps a port and the next run starts at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from devtools.envoy_config import envoy_binary, write_envoy_config  # noqa: E402
from devtools.services import (  # noqa: E402
    ManagedProcess,
    ServiceError,
    find_binary,
    start_envoy,
    start_ferretdb,
    start_postgres,
    start_redis,
)


class Shutdown(BaseException):
    """A signal asked us to stop while children were still starting.

    A BaseException, so that readiness probes, which treat any Exception as "not yet", let it
    through.
    """


def _port_answers(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def probe() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    return probe


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now.

    With ``SO_REUSEADDR``, as the servers themselves bind: the connections of a ``make dev``
    just stopped linger in TIME_WAIT for a minute, and without it they would make the port
    look taken although every server could listen on it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _say(message: str) -> None:
    print(f"{'dev':<9}| {message}", flush=True)


def _parse_args(settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var", type=Path, default=ROOT / "var", help="state and log directory")
    parser.add_argument("--http-port", type=int, default=8080, help="Envoy's REST/gRPC port")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin port")
    parser.add_argument("--mongo-port", type=int, default=27017, help="FerretDB's port")
    parser.add_argument(
        "--postgres-port", type=int, default=15432, help="the PostgreSQL under FerretDB"
    )
    parser.add_argument("--redis-port", type=int, default=6379, help="redis-server's port")
    parser.add_argument(
        "--smtp-port", type=int, default=settings.smtp.port, help="the SMTP sink's port"
    )
    return parser.parse_args()


def main() -> int:
    """Start everything, supervise it, stop it; return the exit status."""
    settings = Settings()
    args = _parse_args(settings)
    var: Path = args.var.resolve()
    logs = var / "log"
    out = sys.stdout
    external_mongo = os.environ.get("MAILROOM_MONGODB_URI")
    external_redis = os.environ.get("MAILROOM_REDIS_URL")

    ports = {
        "Envoy": args.http_port,
        "Envoy admin": args.admin_port,
        "the API": settings.grpc_port,
        "the SMTP sink": args.smtp_port,
    }
    if not external_mongo:
        ports["FerretDB"] = args.mongo_port
        ports["PostgreSQL"] = args.postgres_port
    if not external_redis:
        ports["Redis"] = args.redis_port
    busy = [f"{port} ({what})" for what, port in ports.items() if not _port_free(port)]
    if busy:
        _say(f"port(s) already in use: {', '.join(busy)}; is another `make dev` running?")
        return 1

    stopping = threading.Event()
    starting = True
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stopping.set()
        if starting:
            raise Shutdown(received[-1])

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    children: list[ManagedProcess] = []
    status = 0
    try:
        if external_mongo:
            mongo_uri = external_mongo
            _say(f"using MongoDB at MAILROOM_MONGODB_URI={mongo_uri}")
        else:
            if not (var / "postgres" / "PG_VERSION").exists():
                _say(f"creating the PostgreSQL cluster in {var / 'postgres'} (first run)")
            postgres = start_postgres(
                args.postgres_port, var / "postgres", log_path=logs / "postgres.log", echo=out
            )
            children.append(postgres)
            ferretdb = start_ferretdb(
                args.mongo_port,
                var / "ferretdb",
                postgresql_url=postgres.url,
                log_path=logs / "ferretdb.log",
                echo=out,
            )
            children.append(ferretdb)
            mongo_uri = f"{ferretdb.uri}mailroom"
        if external_redis:
            redis_url = external_redis
            _say(f"using Redis at MAILROOM_REDIS_URL={redis_url}")
        else:
            redis = start_redis(
                args.redis_port, var / "redis", log_path=logs / "redis.log", echo=out
            )
            children.append(redis)
            redis_url = redis.url

        env = {"MAILROOM_MONGODB_URI": mongo_uri, "MAILROOM_REDIS_URL": redis_url}
        if "MAILROOM_SMTP__HOST" not in os.environ:
            env["MAILROOM_SMTP__HOST"] = "127.0.0.1"
            env["MAILROOM_SMTP__PORT"] = str(args.smtp_port)

        def child(
            name: str,
            argv: list[str],
            ready: Callable[[], bool] | None = None,
            ready_timeout: float = 30.0,
        ) -> ManagedProcess:
            process = ManagedProcess(
                name,
                argv,
                log_path=logs / f"{name}.log",
                ready=ready,
                ready_timeout=ready_timeout,
                env=env,
                cwd=ROOT,
                echo=out,
            )
            children.append(process)
            return process.start()

        sink_argv = [sys.executable, "-m", "devtools.smtp_sink", "--port", str(args.smtp_port)]
        child(
            "smtp-sink",
            [*sink_argv, "--dir", str(var / "mail")],
            ready=_port_answers(args.smtp_port),
            ready_timeout=20.0,
        )
        child(
            "api",
            [find_binary("mailroom-api")],
            ready=_port_answers(settings.grpc_port),
            ready_timeout=60.0,
        )
        config = write_envoy_config(
            var / "envoy.yaml",
            listen_port=args.http_port,
            admin_port=args.admin_port,
            api_port=settings.grpc_port,
        )
        envoy = start_envoy(
            config, args.admin_port, binary=envoy_binary(), log_path=logs / "envoy.log", echo=out
        )
        children.append(envoy)
        child("worker", [find_binary("mailroom-worker")])
        child("scheduler", [find_binary("mailroom-scheduler")])

        starting = False
        if stopping.is_set():
            raise Shutdown("signal")
        _say(
            f"ready: REST http://127.0.0.1:{args.http_port} (reference: "
            f"http://127.0.0.1:{args.http_port}/docs), gRPC 127.0.0.1:{settings.grpc_port}, "
            f"mail lands in {var / 'mail'}; Ctrl-C stops everything. Try:"
        )
        print(
            f"  curl -i http://127.0.0.1:{args.http_port}/api/email "
            "-H 'Content-Type: application/json' \\\n"
            '    -d \'{"to": ["someone@example.com"], "title": "Hello", '
            '"content": "Sent through Mailroom"}\'',
            flush=True,
        )
        while not stopping.wait(0.2):
            dead = next((c for c in children if not c.running), None)
            if dead is not None:
                _say(f"{dead.name} exited with status {dead.returncode}; stopping the others")
                status = 1
                break
        else:
            _say(f"{received[0] if received else 'signal'}: stopping")
    except Shutdown as exc:
        _say(f"{exc}: stopping")
    except (ServiceError, FileNotFoundError) as exc:
        _say(f"could not start: {exc}")
        status = 1
    finally:
        starting = False
        for process in reversed(children):
            if process.running:
                _say(f"stopping {process.name}")
            process.stop()
        _say("all stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
