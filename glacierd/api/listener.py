"""HTTP listeners that survive hostile clients.

aiohttp's defaults suit a server behind a friendly proxy: a connection may idle for an hour,
a request body may take for ever, and there is no limit on connections. The SNS listener
faces the internet, so here every connection is bounded:

- **Headers** must arrive within ``HEADER_TIMEOUT_SECONDS`` of the connection opening (or of
  the previous answer on a kept-alive connection). aiohttp's keep-alive timer starts when the
  connection is made and is not reset by incoming bytes, and it closes a connection whose
  request is still incomplete, so it bounds a slow or trickled header block as well as an
  idle connection.
- **A body** must arrive within ``BODY_TIMEOUT_SECONDS`` of its headers; ``api.errors.
  read_body`` enforces that (408) and turns a client that hangs up half-way into a log line,
  not an internal error.
- **Connections** per listener are capped at a share of the process's descriptor limit, so
  a flood on the public port can never take the descriptors the control API, the catalog
  pool and pg_dump need. A connection over the cap is answered 503 and closed at once, and
  the refusals are logged once per interval, with their number, not once each.
- **Malformed HTTP** (a bad request line or header) gets a JSON 400 like every other error,
  logged once per interval instead of with a traceback per request.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web

log = structlog.get_logger("glacierd.listener")

#: Time a client has for its request line and headers (and an idle kept-alive connection
#: stays open). SNS and curl send a request in one go; 10 s is plenty on a slow link.
HEADER_TIMEOUT_SECONDS = 10.0
#: Time a client has for a request body once its headers arrived (bodies are <= 256 KiB).
BODY_TIMEOUT_SECONDS = 10.0
#: After an early answer (408, 413, 400) aiohttp reads and discards the rest of the body for
#: this long, so an honest client sees the answer rather than a reset; a hostile one is not
#: given the default 10 s more.
LINGER_SECONDS = 2.0
#: A flood of refused connections or malformed requests is logged at most this often.
FLOOD_LOG_INTERVAL_SECONDS = 60.0

#: Settings of aiohttp's per-connection protocol, the same on both listeners.
HANDLER_SETTINGS: dict[str, Any] = {
    "keepalive_timeout": HEADER_TIMEOUT_SECONDS,
    "lingering_time": LINGER_SECONDS,
    "access_log": None,
}


def connection_limit(share: int, ceiling: int) -> int:
    """``1/share`` of the soft descriptor limit, at most ``ceiling`` and at least 8.

    With the unit's LimitNOFILE=65536 that is the ceiling; with a shell's default 1,024 the
    SNS listener (share 4) holds at most 256 connections and the control API (share 8) 128,
    which leaves the rest for the catalog pool, pg_dump's pipes and the files being read.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(8, min(ceiling, soft // share))


class OncePerInterval:
    """Logs an event at most once per ``interval`` seconds. Each line carries, under
    ``count_field``, how many occurrences it stands for (those since the previous line), so a
    flood costs one line a minute and still says how big it was."""

    def __init__(
        self,
        event: str,
        count_field: str,
        interval: float = FLOOD_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        **fixed: Any,
    ) -> None:
        self.event = event
        self.count_field = count_field
        self.fixed = fixed
        self.interval = interval
        self._clock = clock
        self._pending = 0
        self._next_at = float("-inf")

    def hit(self, **fields: Any) -> None:
        self._pending += 1
        now = self._clock()
        if now < self._next_at:
            return
        log.warning(
            self.event,
            **{self.count_field: self._pending},
            per_seconds=self.interval,
            **self.fixed,
            **fields,
        )
        self._pending = 0
        self._next_at = now + self.interval


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's protocol, answering malformed HTTP with the API's JSON error body.

    aiohttp answers a request it cannot parse in text and logs it with a traceback; on a
    public port that is one traceback per scanner probe."""

    malformed: OncePerInterval

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # an exception escaped the application: a bug, keep the traceback
            return super().handle_error(request, status, exc, message)
        reason = message or (str(exc) if exc else "unparseable request")
        self.malformed.hit(status=status, reason=reason[:200], peer=request.remote)
        if request.writer.output_size > 0:  # as aiohttp: an answer is already on its way
            raise ConnectionError("an answer was sent already; closing the connection")
        body = {
            "error": f"malformed HTTP request ({reason[:200]}); send a well-formed HTTP/1.1 "
            "request.",
            "status": status,
        }
        response = web.json_response(body, status=status)
        response.force_close()
        return response


class _Gate(asyncio.Protocol):
    """The first protocol of every accepted connection: hands it to aiohttp, or refuses it
    when the listener is full. Deciding in ``connection_made`` (not in the factory) keeps
    the count exact: aiohttp registers a connection there too, synchronously."""

    def __init__(self, site: LimitedSite) -> None:
        self._site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._site.admit(cast(asyncio.Transport, transport))


class LimitedSite(web.BaseSite):
    """A TCP or unix-socket site that holds at most ``max_connections`` connections."""

    def __init__(
        self,
        runner: web.AppRunner,
        listener: str,
        *,
        max_connections: int,
        host: str | None = None,
        port: int | None = None,
        socket_path: str | None = None,
    ) -> None:
        # A small accept backlog: connections waiting in the kernel cost no descriptor, but
        # each accepted one does until the gate has refused it.
        super().__init__(runner, backlog=min(128, max_connections))
        self.listener = listener
        self.max_connections = max_connections
        self._host, self._port, self._path = host, port, socket_path
        self._refused = OncePerInterval(
            "listener.connections_refused", "refused", listener=listener, limit=max_connections
        )
        self._malformed = OncePerInterval(
            "listener.malformed_requests", "requests", listener=listener
        )
        self._refusal = _refusal_bytes(listener)

    @property
    def name(self) -> str:
        return f"http://unix:{self._path}:" if self._path else f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._path:
            self._server = await loop.create_unix_server(
                lambda: _Gate(self), self._path, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                lambda: _Gate(self),
                self._host,
                self._port or 0,  # 0, like None: any free port
                backlog=self._backlog,
                reuse_address=True,
            )

    def admit(self, transport: asyncio.Transport) -> None:
        server = self._runner.server
        if server is None or len(server.connections) >= self.max_connections:
            peer = transport.get_extra_info("peername")
            self._refused.hit(peer=peer[0] if isinstance(peer, tuple) else None)
            transport.write(self._refusal)
            transport.close()
            return
        handler = _JsonErrorHandler(server, loop=asyncio.get_running_loop(), **HANDLER_SETTINGS)
        handler.malformed = self._malformed
        transport.set_protocol(handler)
        handler.connection_made(transport)


def _refusal_bytes(listener: str) -> bytes:
    body = json.dumps(
        {
            "error": f"the {listener} listener has too many connections open; try again in "
            "a few seconds.",
            "status": 503,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 10\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def start_listener(
    app: web.Application,
    listener: str,
    *,
    max_connections: int,
    host: str | None = None,
    port: int | None = None,
    socket_path: str | None = None,
) -> web.AppRunner:
    """Serve ``app`` with the bounds above; ``runner.cleanup()`` stops it as usual."""
    runner = web.AppRunner(app, handle_signals=False, **HANDLER_SETTINGS)
    await runner.setup()
    site = LimitedSite(
        runner,
        listener,
        max_connections=max_connections,
        host=host,
        port=port,
        socket_path=socket_path,
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log "out of descriptors" accept failures once per interval instead of with a
    traceback each: asyncio reports every failed accept (up to the backlog per wake-up), which
    wrote hundreds of megabytes a minute when the descriptor table was full."""
    failures = OncePerInterval("listener.accept_failed", "failures")
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            failures.hit(
                error=str(context.get("exception")),
                detail="the process is out of file descriptors; raise LimitNOFILE=",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
