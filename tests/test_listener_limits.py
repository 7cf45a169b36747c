"""Both HTTP listeners survive hostile clients: the real daemon over real sockets.

The README states the bounds: headers must arrive within 10 s of the connection opening (or
of the previous answer), a body within 10 s of its headers; the SNS listener takes at most a
quarter of the process's file descriptors (256 under the default limit of 1,024), the
control API an eighth, and a refused flood is logged once a minute, not once per connection.
"""

from __future__ import annotations

import json
import resource
import select
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.daemon import Daemon, free_port
from tests.test_sns_verify import TOPIC

#: The bounds the README promises, and the slack a loaded test machine gets on top.
HEADER_SECONDS = 10
BODY_SECONDS = 10
SLACK_SECONDS = 15


def sns_section(port: int) -> dict:
    return {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "path": "/sns",
        "topic_arns": [TOPIC],
    }


@dataclass
class Outcome:
    closed: bool  # the server closed (or reset) the connection
    answer: bytes  # what it sent before that
    sent: int  # bytes of the trickle that went out

    def status(self) -> int | None:
        line = self.answer.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

    def json(self) -> dict:
        return json.loads(self.answer.split(b"\r\n\r\n", 1)[1])


def slow_client(port: int, first: bytes, trickle: bytes, limit: float) -> Outcome:
    """Send ``first``, then one byte of ``trickle`` a second (then nothing), until the
    server closes the connection or ``limit`` seconds pass."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    answer = b""
    sent = 0
    try:
        sock.sendall(first)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    return Outcome(True, answer, sent)
                if not chunk:
                    return Outcome(True, answer, sent)
                answer += chunk
                continue
            if sent < len(trickle):
                try:
                    sock.sendall(trickle[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    return Outcome(True, answer, sent)
                sent += 1
        return Outcome(False, answer, sent)
    finally:
        sock.close()


def slow_headers(port: int, path: str) -> Callable[[], Outcome]:
    first = f"POST {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
    trickle = b"X-Slow: " + b"a" * 200
    return lambda: slow_client(port, first, trickle, HEADER_SECONDS + SLACK_SECONDS)


def slow_body(port: int, path: str, trickle: bytes) -> Callable[[], Outcome]:
    first = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    return lambda: slow_client(port, first, trickle, BODY_SECONDS + SLACK_SECONDS)


def test_slow_clients_are_cut_off_within_the_bounds(daemon_factory, make_settings):
    sns_port = free_port()
    d = daemon_factory(make_settings(sns=sns_section(sns_port)))
    api_port = int(d.base.rsplit(":", 1)[1])
    clients = {
        "sns headers trickled": slow_headers(sns_port, "/sns"),
        "api headers trickled": slow_headers(api_port, "/backups"),
        "sns body stalled": slow_body(sns_port, "/sns", b""),
        "sns body trickled": slow_body(sns_port, "/sns", b" " * 200),
        "api body stalled": slow_body(api_port, "/backups", b""),
    }
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = {name: pool.submit(run) for name, run in clients.items()}
        outcomes = {name: f.result() for name, f in futures.items()}

    for name, outcome in outcomes.items():
        assert outcome.closed, f"{name}: connection still open ({outcome})"
    for name in ("sns headers trickled", "api headers trickled"):
        # Cut before the headers ended: nothing to answer.
        assert outcomes[name].sent < 200 and outcomes[name].answer == b"", outcomes[name]
    for name in ("sns body stalled", "sns body trickled", "api body stalled"):
        outcome = outcomes[name]
        assert outcome.status() == 408, (name, outcome)
        assert outcome.json()["status"] == 408 and "10 s" in outcome.json()["error"], outcome
    assert outcomes["sns body trickled"].sent < 200
    rejected = [e for e in d.events() if e.get("event") == "sns.rejected"]
    assert sorted(e["status"] for e in rejected) == [408, 408], rejected
    # Nothing was started by the stalled POST /backups, and the daemon still answers.
    assert d.request("GET", "/backups").json()["backups"] == []
    d.stop()
    assert "Traceback" not in d.logs()


def dropped_body(port: int, path: str) -> None:
    """Headers announce 1000 bytes; 10 arrive, then the client hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"Type": "'
        )
        time.sleep(0.5)  # let the handler start reading the body


def test_a_client_dropping_its_body_is_not_an_internal_error(daemon_factory, make_settings):
    sns_port = free_port()
    d = daemon_factory(make_settings(sns=sns_section(sns_port)))
    api_port = int(d.base.rsplit(":", 1)[1])
    dropped_body(api_port, "/backups")
    dropped_body(sns_port, "/sns")
    d.wait_for(
        lambda: sum(e.get("event") == "listener.client_gone" for e in d.events()) == 2,
        what="both hang-ups logged",
    )
    assert d.request("GET", "/backups").json()["backups"] == []  # still answering
    d.stop()
    events = d.events()
    assert not [e for e in events if e.get("level") in ("error", "critical")], events
    assert "Traceback" not in d.logs()


class LimitedDaemon(Daemon):
    """The daemon with a lowered descriptor limit, so a flood reaches it quickly."""

    def __init__(self, *args, nofile: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nofile = nofile

    def start(self, wait: bool = True, timeout: float = 30) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        limit = self.nofile
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glacierd", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
        )
        log.close()
        if wait:
            self.wait_healthy(timeout)
        return self


@pytest.fixture
def flood():
    sockets: list[socket.socket] = []

    def open_many(port: int, count: int, timeout: float = 1) -> list[socket.socket]:
        for _ in range(count):
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            except OSError:
                continue  # the kernel's accept queue was full for a moment
        return sockets

    yield open_many
    for s in sockets:
        s.close()


def refused_answers(sockets: list[socket.socket], wait: float = 3.0) -> list[dict]:
    """The JSON bodies of the 503 answers the daemon sent on ``sockets`` within ``wait``."""
    received = {s: b"" for s in sockets}
    with selectors.DefaultSelector() as sel:
        for s in sockets:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    chunk = b""
                received[key.fileobj] += chunk  # type: ignore[index]
                if not chunk:
                    sel.unregister(key.fileobj)
    return [
        json.loads(data.split(b"\r\n\r\n", 1)[1])
        for data in received.values()
        if data.startswith(b"HTTP/1.1 503 ")
    ]


def test_idle_connection_flood_does_not_starve_the_control_api(
    daemon_factory, make_settings, tmp_path, flood
):
    nofile = 256  # the SNS listener then admits 64 connections, the control API 32
    sns_port = free_port()
    settings = make_settings(sns=sns_section(sns_port))
    d = daemon_factory(settings, start=False)
    d = LimitedDaemon(d.config, settings["api"]["port"], nofile=nofile)
    try:
        d.start()
        sockets = flood(sns_port, nofile + 150)
        assert len(sockets) > nofile  # more than the daemon could ever hold open
        # Everything over the cap was answered 503 (with a JSON body) and closed.
        refused = refused_answers(sockets)
        assert len(refused) >= len(sockets) - nofile // 4, (len(refused), len(sockets))
        assert refused[0]["status"] == 503 and "too many connections" in refused[0]["error"]

        health = d.request("GET", "/health")
        assert health.status == 200, health.body
        started = d.request("POST", "/backups")
        assert started.status == 202, started.body
        assert d.wait_backup(started.json()["id"])["status"] == "completed"

        refusals = [e for e in d.events() if e.get("event") == "listener.connections_refused"]
        assert refusals and refusals[0]["listener"] == "sns", refusals
        assert refusals[0]["limit"] == nofile // 4
        assert len(refusals) <= 2, refusals  # once per interval, not once per connection
        # The descriptor table never ran out: no accept errors, no tracebacks.
        assert "out of system resource" not in d.logs()
        assert "Too many open files" not in d.logs()
        assert "Traceback" not in d.logs()
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_running_out_of_descriptors_is_logged_once_per_interval(
    daemon_factory, make_settings, flood
):
    """With descriptors so few that even the caps cannot keep accept() from failing, the
    failures cost a log line a minute, not a traceback per attempt (asyncio's default wrote
    hundreds of megabytes a minute)."""
    nofile = 20  # the daemon itself holds about 11 when idle
    sns_port = free_port()
    settings = make_settings(sns=sns_section(sns_port))
    d = daemon_factory(settings, start=False)
    d = LimitedDaemon(d.config, settings["api"]["port"], nofile=nofile)
    try:
        d.start()
        started = time.monotonic()
        flood(sns_port, 60, timeout=0.2)
        d.wait_for(
            lambda: any(e.get("event") == "listener.accept_failed" for e in d.events()),
            what="the accept failures to be logged",
        )
        time.sleep(3)  # asyncio retries accept() every second: three more rounds of failures
        failures = [e for e in d.events() if e.get("event") == "listener.accept_failed"]
        minutes = (time.monotonic() - started) // 60
        assert 1 <= len(failures) <= 1 + minutes, failures
        assert "raise LimitNOFILE" in failures[0]["detail"]
        assert "out of system resource" not in d.logs()
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def unix_request(path: str, method: str, target: str) -> tuple[int, dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_control_api_on_a_unix_socket_is_served_the_same_way(
    daemon_factory, make_settings, tmp_path
):
    path = str(tmp_path / "api.socket")
    d = daemon_factory(make_settings(api={"socket": path}), start=False)
    d.start(wait=False)

    def healthy() -> dict | None:
        try:
            status, body = unix_request(path, "GET", "/health")
        except OSError:  # not listening yet
            return None
        return body if status == 200 else None

    assert d.wait_for(healthy, what="/health over the unix socket")["status"] == "ok"
    status, body = unix_request(path, "POST", "/backups")
    assert status == 202 and body["status"] == "running", body
    status, body = unix_request(path, "GET", f"/backups/{body['id']}")
    assert status == 200 and body["id"] == 1
    assert unix_request(path, "GET", "/backups/%D9%A1")[0] == 400
    d.stop()
    assert "Traceback" not in d.logs()
