"""The SNS endpoint: the one listener meant to face the internet (behind a TLS proxy).

Verify first, then dispatch (the shape of a good webhook receiver): nothing in a message is
trusted or acted on before its signature, certificate host, topic and age are checked. A
rejected message gets a 4xx with the reason, changes nothing, and is logged.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from glacierd.api.errors import BadRequest, BodyTimeout, json_errors, read_body
from glacierd.context import Context
from glacierd.notifications.dispatch import dispatch
from glacierd.notifications.events import parse_events
from glacierd.notifications.sns import (
    SUBSCRIPTION_CONFIRMATION,
    SnsError,
    SnsVerifier,
    parse_message,
)

log = structlog.get_logger("glacierd.sns")
CTX = web.AppKey("ctx", Context)
VERIFIER = web.AppKey("verifier", SnsVerifier)
# An archive the news made ready goes to the fetcher (wired by service.py).
ON_READY: web.AppKey[Callable[[int], object]] = web.AppKey("on_ready")
MAX_BODY = 256 * 1024  # SNS messages are at most 256 KiB


def _reject(request: web.Request, exc: SnsError) -> web.Response:
    log.warning("sns.rejected", status=exc.status, reason=exc.reason, peer=request.remote)
    response = web.json_response({"error": exc.reason, "status": exc.status}, status=exc.status)
    if exc.status in (408, 413):
        response.force_close()  # the rest of the body may still be on its way
    return response


async def _read(request: web.Request) -> bytes:
    """The body, as an SnsError when it is too large or too slow (so it is logged as a
    rejection like every other refused message)."""
    try:
        return await read_body(request)
    except web.HTTPRequestEntityTooLarge:
        raise SnsError(
            413, f"SNS message body is larger than {MAX_BODY // 1024} KiB (SNS sends at most 256)"
        ) from None
    except BodyTimeout as exc:
        raise SnsError(408, str(exc)) from None
    except BadRequest as exc:
        raise SnsError(400, str(exc)) from None


async def receive(request: web.Request) -> web.Response:
    verifier = request.app[VERIFIER]
    try:
        body = await _read(request)
        msg = parse_message(body, request.headers.get("x-amz-sns-message-type"))
        await verifier.verify(msg)
        if msg["Type"] == SUBSCRIPTION_CONFIRMATION:
            # Verified just above: only the confirmation GET is left.
            await verifier.confirm_verified(msg)
    except SnsError as exc:
        return _reject(request, exc)
    kind, topic = msg["Type"], msg["TopicArn"]
    if kind == SUBSCRIPTION_CONFIRMATION:
        log.info("sns.subscription_confirmed", topic=topic)
        return web.json_response({"confirmed": True})
    if kind == "UnsubscribeConfirmation":
        log.warning(
            "sns.unsubscribed",
            topic=topic,
            outcome="notifications stop; polling still finds finished retrievals",
        )
        return web.json_response({"ok": True})
    try:
        events = parse_events(msg["Message"])
    except SnsError as exc:
        return _reject(request, exc)
    changed = 0
    for event in events:
        changed += await dispatch(request.app[CTX], event, request.app[ON_READY])
    log.info(
        "sns.notification",
        topic=topic,
        message_id=msg["MessageId"],
        events=len(events),
        changed=changed,
    )
    return web.json_response({"events": len(events), "changed": changed})


def sns_app(
    ctx: Context, verifier: SnsVerifier, path: str, *, on_ready: Callable[[int], object]
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
    app[CTX] = ctx
    app[VERIFIER] = verifier
    app[ON_READY] = on_ready
    app.router.add_post(path, receive)
    return app
