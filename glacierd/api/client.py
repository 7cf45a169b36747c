"""A small client for the control API, used by the CLI commands that go through the running
daemon (a restore or a retrieval is driven by the daemon: they take hours and end with a
notification).

The token comes from the configuration's sources (``[api] token_env`` or ``token_file``),
read in a thread; it is never taken from the command line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from glacierd.config import Config
from glacierd.operations.errors import OperationError

#: How long one request may take (the daemon answers quickly; work runs in the background).
REQUEST_SECONDS = 60


class ApiError(OperationError):
    """The daemon refused a request: its status and its error's sentence (and, when the
    daemon said them apart, its detail and fix)."""

    def __init__(
        self, status: int, message: str, *, detail: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(detail or message, fix, message=message)
        self.status = status


class DaemonUnreachable(OperationError):
    """Nothing answers at the control API's address."""


def _token_missing(config: Config) -> ApiError:
    api = config.api
    return ApiError(
        401,
        "the daemon wants a bearer token and this command has none; set [api] token_file to "
        "the token file (install.sh creates /etc/glacierd/api-token for the "
        f"glacierd-operators group) or run it with sudo (or set ${api.token_env}).",
    )


async def call(config: Config, method: str, path: str, body: Any = None) -> Any:
    api = config.api
    token = await asyncio.to_thread(lambda: api.token)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.UnixConnector(path=str(api.socket)) if api.socket else None
    base = "http://localhost" if api.socket else api.base_url
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method,
                base + path,
                headers=headers,
                data=json.dumps(body) if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
            ) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        where = api.socket or api.base_url
        raise DaemonUnreachable(
            f"the glacierd daemon is not reachable at {where} ({str(exc) or type(exc).__name__})",
            "start it with 'systemctl start glacierd' (or 'glacierd serve')",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ApiError(resp.status, f"unexpected answer from the daemon: {text[:200]}") from None
    if resp.status == 401 and not token:
        raise _token_missing(config)
    if resp.status >= 400:
        fields = data if isinstance(data, dict) else {}
        raise ApiError(
            resp.status,
            str(fields.get("error", text)),
            detail=fields.get("detail"),
            fix=fields.get("fix"),
        )
    return data


async def pages(config: Config, path: str, items: str, limit: int) -> AsyncIterator[Any]:
    """Each page of ``path`` (answers with ``items`` and ``next_offset``), first to last."""
    offset: int | None = 0
    separator = "&" if "?" in path else "?"
    while offset is not None:
        page = await call(config, "GET", f"{path}{separator}limit={limit}&offset={offset}")
        yield page
        offset = page.get("next_offset") if page.get(items) else None
