"""systemd's sd_notify protocol in a few lines (no dependency): READY=1, RELOADING=1,
STOPPING=1, STATUS=, and the watchdog's WATCHDOG=1 pings."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("glacierd.sdnotify")


def notify(message: str) -> bool:
    """Send ``message`` to $NOTIFY_SOCKET; a no-op (False) when not run by systemd, or when
    the socket is gone (systemd itself restarting): like sd_notify(3), a failure to tell
    systemd never stops glacierd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (sd_watchdog_enabled(3)
    advises pinging at half the timeout). None when systemd expects no pings: no
    WatchdogSec= in the unit, or $WATCHDOG_PID names another process (the variables were
    inherited, not meant for us)."""
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return usec / 2_000_000


async def watchdog(interval: float) -> None:
    """Ping systemd every ``interval`` seconds, from the event loop itself: a loop that is
    blocked (a blocking call, a busy loop) sends no ping, and after WatchdogSec= systemd
    kills glacierd (SIGABRT) and restarts it."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def start_watchdog() -> asyncio.Task[None] | None:
    """Start the pings when systemd asks for them (WatchdogSec=); the caller cancels the
    task last, when glacierd exits. Also has Python print every thread's stack on the
    watchdog's SIGABRT, so the journal shows where the loop was stuck."""
    interval = watchdog_interval()
    if interval is None:
        return None
    faulthandler.enable(all_threads=True)
    log.info("service.watchdog", ping_every_s=interval, timeout_s=interval * 2)
    return asyncio.get_running_loop().create_task(watchdog(interval), name="watchdog")
