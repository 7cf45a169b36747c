"""A webhook receiver for the hook tests: a real aiohttp server on loopback, on its own event
loop in a thread, so it answers both in-process dispatchers and a daemon the test drives
with blocking HTTP calls."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.daemon import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Answers each POST with the next of ``statuses`` (then 200) and records it. While
    ``hold`` is set, a request waits until it is cleared (to cut a delivery off midway)."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/secret-path-token"

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.arrived.set()
        while self.hold.is_set():
            await asyncio.sleep(0.01)
        self.received.append(Received(dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="" if status < 300 else "receiver is down")

    def events(self) -> list[tuple[str, int | None, int | None]]:
        return [(r.body["event"], r.body["backup_id"], r.body["restore_id"]) for r in self.received]


@contextmanager
def webhook_receiver(statuses: list[int] | None = None) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses=list(statuses or []))
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/hooks/secret-path-token", receiver._handle)
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receiver.port).start()

    thread = threading.Thread(target=loop.run_forever, name="webhook-receiver", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield receiver
    finally:
        receiver.hold.clear()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
