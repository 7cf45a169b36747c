"""systemd's watchdog (WatchdogSec=) and the sd_notify messages around a reload.

The pings must come from the event loop itself, so that a blocked loop stops them and
systemd restarts glacierd.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glacierd import sdnotify
from tests.daemon import Daemon


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        # Inherited from a parent that systemd watches: not meant for this process.
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
    ],
)
def test_ping_interval_is_half_the_watchdog_timeout(environ: dict, expected: float | None):
    assert sdnotify.watchdog_interval(environ, pid=4242) == expected


def test_notify_without_systemd_or_with_its_socket_gone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("WATCHDOG=1") is False  # no exception: glacierd goes on


async def test_a_blocked_event_loop_sends_no_pings(notify_socket: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    notify_socket.setblocking(False)
    pinger = asyncio.create_task(sdnotify.watchdog(0.01))
    try:
        assert await asyncio.wait_for(loop.sock_recv(notify_socket, 64), 10) == b"WATCHDOG=1"
        while True:  # forget the pings sent so far
            try:
                notify_socket.recv(64)
            except BlockingIOError:
                break
        # Block the loop (as a blocking call on it would) for many ping intervals.
        time.sleep(0.5)
        with pytest.raises(BlockingIOError):
            notify_socket.recv(64)  # nothing was sent meanwhile
        # Once the loop runs again, so do the pings.
        assert await asyncio.wait_for(loop.sock_recv(notify_socket, 64), 10) == b"WATCHDOG=1"
    finally:
        pinger.cancel()


def test_daemon_pings_the_watchdog_and_reports_reloads(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)

    def next_message(skip_pings: bool = True) -> str:
        while True:
            message = sock.recv(4096).decode()
            if not (skip_pings and message == "WATCHDOG=1"):
                return message

    try:
        # WatchdogSec=0.4s: a ping every 0.2 s.
        d = daemon_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        assert "READY=1" in next_message()
        assert [next_message(skip_pings=False) for _ in range(3)] == ["WATCHDOG=1"] * 3
        watchdog = [e for e in d.events() if e.get("event") == "service.watchdog"]
        assert watchdog and watchdog[0]["ping_every_s"] == 0.2

        d.signal(signal.SIGHUP)
        reloading = next_message()
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
        usec = int(reloading.split("\n")[1].split("=")[1])
        assert abs(usec - time.monotonic_ns() // 1000) < 60_000_000  # CLOCK_MONOTONIC
        assert next_message() == "READY=1\nSTATUS=glacierd is running"

        d.signal(signal.SIGTERM)
        assert "STOPPING=1" in next_message()
        assert d.proc is not None and d.proc.wait(30) == 0
    finally:
        sock.close()


def test_no_pings_when_the_watchdog_is_meant_for_another_process(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    try:
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
        d = daemon_factory(env=env)
        assert d.proc is not None and d.proc.pid != 1
        assert "READY=1" in sock.recv(4096).decode()
        d.signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()  # and no WATCHDOG=1 before it
        assert d.proc is not None and d.proc.wait(30) == 0
        assert not [e for e in d.events() if e.get("event") == "service.watchdog"]
    finally:
        sock.close()
