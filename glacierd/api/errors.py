"""Every control-API error is a JSON body ``{"error": "...", "status": N}``: one place maps
exceptions to HTTP statuses, so handlers stay a few lines long. An error that says apart
what is wrong and what to do (a ``GlacierdError`` with a ``fix``) also carries ``"detail"``
and ``"fix"``, so a client need not take the sentence apart."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from glacierd import jsonsafe
from glacierd.api.listener import BODY_TIMEOUT_SECONDS
from glacierd.catalog.locks import BusyError
from glacierd.errors import GlacierdError
from glacierd.operations.errors import EXPECTED
from glacierd.operations.inventory import ConflictError, NotFoundError
from glacierd.operations.restore import RestoreFailed

log = structlog.get_logger("glacierd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """The request is malformed; the message says what to send instead."""


class BodyTimeout(Exception):
    """The request body did not arrive within BODY_TIMEOUT_SECONDS (answered 408, closed)."""


class ClientGone(Exception):
    """The client hung up before its request body was complete: nobody to answer."""


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def exception_response(status: int, exc: BaseException) -> web.Response:
    """The JSON error for ``exc``: its sentence, and its detail and fix when it has a fix."""
    body: dict[str, object] = {"error": str(exc), "status": status}
    if isinstance(exc, GlacierdError) and exc.fix:
        body |= exc.fields()
    return web.json_response(body, status=status)


_MAPPED: list[tuple[type[BaseException], int]] = [
    (BadRequest, 400),
    (BodyTimeout, 408),
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
    except ClientGone:
        # Routine on any network: logged, no traceback, and no answer anyone could read.
        log.info("listener.client_gone", path=request.path, peer=request.remote)
        response = error_response(400, "the request body was cut off.")
        response.force_close()
        return response
    except Exception as exc:
        for kind, status in _MAPPED:
            if isinstance(exc, kind):
                response = exception_response(status, exc)
                if status == 408:
                    response.force_close()  # the rest of the body may still be on its way
                return response
        if isinstance(exc, EXPECTED):
            log.error("api.operation_failed", path=request.path, error=str(exc))
            return exception_response(502, exc)
        log.exception("api.internal_error", path=request.path)
        return error_response(500, "internal error; the glacierd log has the details.")


async def read_body(request: web.Request) -> bytes:
    """The whole request body, within BODY_TIMEOUT_SECONDS and the app's size limit.

    Raises BodyTimeout for a body that stalls or trickles, ClientGone when the client hangs
    up half-way, HTTPRequestEntityTooLarge (413) for a body over the limit (refused from its
    Content-Length alone when that already says so) and BadRequest for a broken chunked
    encoding.
    """
    limit = request.client_max_size
    if limit and (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length or 0)
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {BODY_TIMEOUT_SECONDS:g} s; send the "
            "whole request at once."
        ) from None
    except ConnectionError:
        raise ClientGone from None
    except web.RequestPayloadError as exc:
        raise BadRequest(
            f"the request body is malformed ({exc}); send a plain JSON body."
        ) from None


def parse_json(raw: bytes) -> object:
    """Decode a JSON body with a nesting limit (see glacierd/jsonsafe.py)."""
    try:
        return jsonsafe.loads(raw)
    except jsonsafe.JsonTooDeep as exc:
        raise BadRequest(f"the request body is {exc}; send a flat JSON object.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON ({exc}); send a JSON object."
        ) from None


async def read_json_object(request: web.Request, allowed: set[str]) -> dict[str, object]:
    """The request body as a JSON object (an empty body is {}); unknown fields are refused."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object, such as {}.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        fields = ", ".join(sorted(allowed)) or "none"
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed fields: {fields}.")
    return body


# ASCII digits only: str.isdigit() also accepts "١" (Arabic-Indic one, which int() reads as
# 1) and "²" (which int() refuses), and int() of thousands of digits raises ValueError.
_ASCII_NUMBER = re.compile(r"[0-9]{1,19}")


def whole_number(raw: str, lowest: int, highest: int) -> int | None:
    """``raw`` as an int if it is plain ASCII digits within [lowest, highest], else None."""
    if not _ASCII_NUMBER.fullmatch(raw):
        return None
    value = int(raw)
    return value if lowest <= value <= highest else None


#: Ids are PostgreSQL bigints.
MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    value = whole_number(raw, 1, MAX_ID)
    if value is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise BadRequest(f"{shown!r} is not a valid id; ids are positive whole numbers.")
    return value
