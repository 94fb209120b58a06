"""MAILROOM_API_PROCESSES: several API servers on one port, supervised by ``mailroom-api``."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from devtools.envoy_config import write_envoy_config
from devtools.services import start_envoy
from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2, mail_pb2_grpc
from mailroom_processes import BIN, ApiProcess

REQUEST = mail_pb2.SendEmailRequest(to=["a@example.com"], title="hi", content="hello")
ESTABLISHED, LISTEN = "01", "0A"  # TCP states in /proc/net/tcp
CLIENTS = 16  # the chance that the kernel puts all on one server: 2 in 65536


def servers(supervisor: ApiProcess) -> list[int]:
    pid = supervisor.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _sockets(port: int, state: str) -> set[str]:
    """The inodes (as fd link targets) of TCP sockets on local ``port`` in ``state``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(f"socket:[{fields[9]}]")
    return found


def _held(pid: int, sockets: set[str]) -> int:
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd) in sockets
        except OSError:  # closed meanwhile
            continue
    return held


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` the process ``pid`` holds."""
    return _held(pid, _sockets(port, ESTABLISHED))


def all_listening(api: ApiProcess, count: int) -> bool:
    """Whether ``count`` API servers run and each has its listening socket on the port."""
    pids = servers(api)
    listening = _sockets(api.port, LISTEN)
    return len(pids) == count and all(_held(pid, listening) for pid in pids)


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def send_from_new_clients(api: ApiProcess, count: int) -> tuple[list[str], dict[int, int]]:
    """Send one email from each of ``count`` clients, each with a connection of its own.

    Returns:
        The email ids, and how many of the clients' connections each API server holds.
    """
    channels = [
        grpc.insecure_channel(api.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    try:
        ids = [
            mail_pb2_grpc.MailServiceStub(channel).SendEmail(REQUEST, timeout=10).id
            for channel in channels
        ]
        # Every client's connection is still open: count who holds them.
        return ids, {pid: connections_held(pid, api.port) for pid in servers(api)}
    finally:
        for channel in channels:
            channel.close()


@pytest.fixture
def api_pair(service_env, tmp_path) -> Iterator[ApiProcess]:
    """``mailroom-api`` with MAILROOM_API_PROCESSES=2, both servers up."""
    api = ApiProcess({**service_env, "MAILROOM_API_PROCESSES": "2"}, tmp_path / "api.log")
    api.start()
    try:
        wait_until(lambda: all_listening(api, 2), timeout=15, message="two API servers listening")
        yield api
    finally:
        api.stop()


def test_two_api_processes_share_one_port_and_the_clients(api_pair, mail_client) -> None:
    ids, held = send_from_new_clients(api_pair, CLIENTS)

    assert len(set(ids)) == CLIENTS
    for email_id in ids:  # stored in the shared database, whichever process took it
        email = mail_client.GetEmail(mail_pb2.GetEmailRequest(id=email_id), timeout=5).email
        assert email.id == email_id
    assert sum(held.values()) == CLIENTS, held
    assert all(count > 0 for count in held.values()), f"connections per server: {held}"


def test_a_killed_api_process_is_replaced_and_sigterm_stops_them_all(api_pair) -> None:
    first, second = servers(api_pair)
    os.kill(first, signal.SIGKILL)

    wait_until(
        lambda: first not in servers(api_pair) and all_listening(api_pair, 2),
        timeout=15,
        message="the killed API server replaced, and the replacement listening",
    )
    replaced = servers(api_pair)
    assert second in replaced
    assert "exited with status -9; starting another" in api_pair.log_path.read_text()
    # New clients are answered by both servers, the replacement included.
    ids, held = send_from_new_clients(api_pair, CLIENTS)
    assert len(set(ids)) == CLIENTS
    assert sorted(held) == sorted(replaced)
    assert all(count > 0 for count in held.values()), f"connections per server: {held}"

    assert api_pair.stop() == 0
    assert all(gone(pid) for pid in replaced)


def test_envoy_spreads_rest_clients_over_both_api_processes(api_pair, tmp_path) -> None:
    port, admin_port = free_port(), free_port()
    config = write_envoy_config(
        tmp_path / "envoy.yaml", listen_port=port, admin_port=admin_port, api_port=api_pair.port
    )
    envoy = start_envoy(config, admin_port)
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(CLIENTS)]
    try:
        body = json.dumps({"to": ["a@example.com"], "title": "hi", "content": "hello"})
        answers = []
        for client in clients:
            client.request("POST", "/api/email", body, {"content-type": "application/json"})
            response = client.getresponse()
            answers.append((response.status, json.loads(response.read())["id"]))
        # Envoy keeps an upstream connection per client connection, so each server holds some.
        held = {pid: connections_held(pid, api_pair.port) for pid in servers(api_pair)}
    finally:
        for client in clients:
            client.close()
        envoy.stop()

    assert {status for status, _ in answers} == {201}
    assert len({email_id for _, email_id in answers}) == CLIENTS
    # At least one upstream connection per client (plus Envoy's health checks)...
    assert sum(held.values()) >= CLIENTS, f"Envoy's connections per server: {held}"
    # ...and clients on both servers: more than Envoy's one health-check connection.
    assert all(count >= 2 for count in held.values()), f"Envoy's connections per server: {held}"


def test_servers_stop_when_the_supervisor_is_killed(api_pair) -> None:
    children = servers(api_pair)
    os.kill(api_pair.pid, signal.SIGKILL)

    wait_until(
        lambda: all(gone(pid) for pid in children),
        timeout=15,
        message="no API server left holding the port after its supervisor was SIGKILLed",
    )


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_api_that_cannot_bind_its_port_exits_1_saying_so(service_env, processes) -> None:
    # Another program holds the port, without SO_REUSEPORT: no server can bind it.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **os.environ,
            **service_env,
            "MAILROOM_GRPC_HOST": "127.0.0.1",
            "MAILROOM_GRPC_PORT": str(port),
            "MAILROOM_API_PROCESSES": processes,
        }
        result = subprocess.run(
            [str(BIN / "mailroom-api")], env=env, capture_output=True, text=True, timeout=60
        )

    assert result.returncode == 1, result.stderr[-2000:]
    assert f"cannot bind 127.0.0.1:{port}: the port is in use" in result.stderr
    if processes != "1":  # the supervisor does not restart servers that can never start
        assert "died within 10s of starting; giving up" in result.stderr


def test_sigterm_while_servers_start_stops_them_all(service_env, tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        **service_env,
        "MAILROOM_GRPC_HOST": "127.0.0.1",
        "MAILROOM_GRPC_PORT": str(port),
        "MAILROOM_API_PROCESSES": "4",
    }
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mailroom-api")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # Stop it while it is still forking its servers.
        wait_until(
            lambda: "API server 0 started" in log.read_text(),
            timeout=15,
            message="the first API server forked",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    # No server left behind on the port.
    wait_until(
        lambda: not _sockets(port, LISTEN), timeout=10, message="nothing listening on the port"
    )
