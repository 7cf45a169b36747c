"""The control API: a small curl-friendly JSON API on loopback (or a unix socket).

Handlers only parse the request and call an operation; errors are mapped in api/errors.py.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from glacierd.api.errors import (
    MAX_ID,
    BadRequest,
    Handler,
    error_response,
    json_errors,
    path_id,
    read_json_object,
    whole_number,
)
from glacierd.api.metrics import metrics_handler
from glacierd.catalog import restores as restore_rows
from glacierd.config import TIERS
from glacierd.context import Context
from glacierd.health import evaluate
from glacierd.operations import inventory, restore, retrieval
from glacierd.operations.backup import start_backup
from glacierd.operations.restore.snapshot import snapshot_view

CTX = web.AppKey("ctx", Context)
# What the daemon wires in (api/errors.py maps the errors, service.py the follow-ups): an
# archive found ready goes to the fetcher; a new restore request is advanced soon.
ON_READY: web.AppKey[Callable[[int], object]] = web.AppKey("on_ready")
KICK_RESTORES: web.AppKey[Callable[[], None]] = web.AppKey("kick_restores")
OPEN_PATHS = {"/health"}


# Host: a loopback name or address, optionally with a port, and nothing else. Parsed whole:
# "localhost:80@evil" or "localhost.evil" must not pass as "localhost".
_HOST = re.compile(r"(?P<name>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _is_loopback_host(host: str) -> bool:
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    name = match["name"].lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def local_clients_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what a web page could send: browsers always add Origin to a POST, and a DNS
    rebinding attack arrives with a foreign Host. curl and the CLI send neither. A request
    target in absolute form ("GET http://host/path", as sent to a proxy) names a host of its
    own, which HTTP says wins over the Host header: refused too."""
    if "Origin" in request.headers:
        return error_response(
            403, "requests from web browsers are refused; use curl or the glacierd CLI."
        )
    if not request.raw_path.startswith("/"):
        return error_response(
            403,
            "absolute request targets (as sent to a proxy) are refused; request the path "
            "only, such as GET /health.",
        )
    host = request.headers.get("Host", "localhost")
    if not _is_loopback_host(host):
        return error_response(
            403, f"Host {host!r} is not a loopback name; address the API as 127.0.0.1."
        )
    return await handler(request)


def bearer_auth(token: str | None) -> Middleware:
    expected = f"Bearer {token}".encode() if token else b""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in OPEN_PATHS:
            # aiohttp keeps undecodable header bytes as surrogates; encode them back so a
            # stray 0xff byte is a wrong token (401), not an encoding error (500).
            sent = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(sent, expected):
                return error_response(
                    401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'."
                )
        return await handler(request)

    return middleware


async def health(request: web.Request) -> web.Response:
    """200 when healthy, else 503 with one sentence per problem (glacierd/health/). It needs
    no token; without the right one (when one is set) the problems are named, not
    explained: their sentences (paths, hosts, errors) are for the operator."""
    ctx = request.app[CTX]
    result = await evaluate(ctx)
    token = ctx.config.api.token
    sent = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    details = not token or hmac.compare_digest(sent, f"Bearer {token}".encode())
    return web.json_response(result.as_json(details=details), status=200 if result.healthy else 503)


def _query_number(request: web.Request, name: str, lowest: int, highest: int) -> int | None:
    raw = request.query.get(name)
    value = None if raw is None else whole_number(raw, lowest, highest)
    if raw is not None and value is None:
        raise BadRequest(f"{name} must be a whole number from {lowest} to {highest}.")
    return value


async def list_backups(request: web.Request) -> web.Response:
    limit = _query_number(request, "limit", 1, 10000) or 100
    before = _query_number(request, "before", 1, MAX_ID)  # page backwards from this id
    rows = await inventory.list_backups(request.app[CTX], limit, before)
    return web.json_response({"backups": rows})


async def create_backup(request: web.Request) -> web.Response:
    await read_json_object(request, allowed=set())
    handle = await start_backup(request.app[CTX], "api")
    return web.json_response(
        {"id": handle.backup_id, "status": "running", "url": f"/backups/{handle.backup_id}"},
        status=202,
    )


async def get_backup(request: web.Request) -> web.Response:
    # Paged when asked: ?limit=N&offset=M (the answer's next_offset is the next page's M).
    limit = _query_number(request, "limit", 1, 10000)
    offset = _query_number(request, "offset", 0, MAX_ID) or 0
    detail = await inventory.backup_detail(request.app[CTX], path_id(request), limit, offset)
    return web.json_response(detail)


async def retrieve_backup(request: web.Request) -> web.Response:
    body = await read_json_object(request, allowed={"tier"})
    tier = body.get("tier")
    if tier is not None and tier not in TIERS:
        raise BadRequest(f"tier {tier!r} is not one of {', '.join(TIERS)}.")
    result = await retrieval.retrieve_backup(
        request.app[CTX], path_id(request), tier, on_ready=request.app[ON_READY]
    )
    return web.json_response(result, status=202)


def _flag(body: dict[str, object], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false.")
    return value


async def restore_backup(request: web.Request) -> web.Response:
    body = await read_json_object(request, allowed={"tier", "database", "files", "dry_run"})
    tier = body.get("tier")
    if tier is not None and tier not in TIERS:
        raise BadRequest(f"tier {tier!r} is not one of {', '.join(TIERS)}.")
    ctx = request.app[CTX]
    options = {
        "tier": tier,
        "database": _flag(body, "database", True),
        # Without files.root the backups hold the database only: files default to false.
        "files": _flag(body, "files", ctx.config.files.root is not None),
        "dry_run": _flag(body, "dry_run", False),
    }
    result = await restore.start_restore(ctx, path_id(request), options)
    if options["dry_run"]:
        return web.json_response(result)
    request.app[KICK_RESTORES]()
    return web.json_response(result, status=202)


async def list_restores(request: web.Request) -> web.Response:
    return web.json_response({"restores": await restore.list_restores(request.app[CTX])})


async def get_restore(request: web.Request) -> web.Response:
    return web.json_response(await restore.restore_view(request.app[CTX], path_id(request)))


async def list_snapshots(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    snaps = await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog)
    return web.json_response({"snapshots": [snapshot_view(s) for s in snaps]})


async def restore_snapshot(request: web.Request) -> web.Response:
    await read_json_object(request, allowed=set())
    ctx = request.app[CTX]
    result = await restore.start_snapshot_restore(ctx, path_id(request))
    request.app[KICK_RESTORES]()
    return web.json_response(result, status=202)


async def delete_backup(request: web.Request) -> web.Response:
    return web.json_response(await inventory.delete_backup(request.app[CTX], path_id(request)))


def control_app(
    ctx: Context, *, on_ready: Callable[[int], object], kick_restores: Callable[[], None]
) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, local_clients_only, bearer_auth(ctx.config.api.token)],
        client_max_size=64 * 1024,
    )
    app[CTX] = ctx
    app[ON_READY] = on_ready
    app[KICK_RESTORES] = kick_restores
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler(ctx))
    app.router.add_get("/backups", list_backups)
    app.router.add_post("/backups", create_backup)
    app.router.add_get("/backups/{id}", get_backup)
    app.router.add_delete("/backups/{id}", delete_backup)
    app.router.add_post("/backups/{id}/retrieve", retrieve_backup)
    app.router.add_post("/backups/{id}/restore", restore_backup)
    app.router.add_get("/restores", list_restores)
    app.router.add_get("/restores/{id}", get_restore)
    app.router.add_get("/snapshots", list_snapshots)
    app.router.add_post("/snapshots/{id}/restore", restore_snapshot)
    return app
