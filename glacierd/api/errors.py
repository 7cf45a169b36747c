"""Every control-API error is a JSON body ``{"error": "...", "status": N}``: one place maps
exceptions to HTTP statuses, so handlers stay a few lines long."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from glacierd.catalog.locks import BusyError
from glacierd.operations.errors import EXPECTED
from glacierd.operations.inventory import ConflictError, NotFoundError
from glacierd.operations.restore import RestoreFailed

log = structlog.get_logger("glacierd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """The request is malformed; the message says what to send instead."""


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


_MAPPED: list[tuple[type[BaseException], int]] = [
    (BadRequest, 400),
    (RestoreFailed, 422),
    (NotFoundError, 404),
    (BusyError, 409),
    (ConflictError, 409),
]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no such endpoint: {request.path}; see the README for the endpoints.",
            405: f"{request.method} is not allowed on {request.path}.",
            413: "the request body is too large; send a small JSON object.",
        }.get(exc.status, exc.reason)
        return error_response(exc.status, message)
    except Exception as exc:
        for kind, status in _MAPPED:
            if isinstance(exc, kind):
                return error_response(status, str(exc))
        if isinstance(exc, EXPECTED):
            log.error("api.operation_failed", path=request.path, error=str(exc))
            return error_response(502, str(exc))
        log.exception("api.internal_error", path=request.path)
        return error_response(500, "internal error; the glacierd log has the details.")


async def read_json_object(request: web.Request, allowed: set[str]) -> dict[str, object]:
    """The request body as a JSON object (an empty body is {}); unknown fields are refused."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON ({exc}); send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object, such as {}.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        fields = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed fields: {fields}.")
    return body


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or int(raw) <= 0 or len(raw) > 18:
        raise BadRequest(f"{raw!r} is not a valid id; ids are positive whole numbers.")
    return int(raw)
