"""A small client for the control API, used by CLI commands that need the running daemon
(a restore is driven by the daemon: retrievals take hours and arrive as notifications)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from glacierd.config import Config
from glacierd.operations.errors import OperationError


class ApiError(OperationError):
    """The daemon refused a request: its status and its error's sentence (and, when the
    daemon said them apart, its detail and fix)."""

    def __init__(
        self, status: int, message: str, *, detail: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(detail or message, fix, message=message)
        self.status = status


async def call(config: Config, method: str, path: str, body: Any = None) -> Any:
    api = config.api
    headers = {"Content-Type": "application/json"}
    if api.token:
        headers["Authorization"] = f"Bearer {api.token}"
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
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError as exc:
        where = api.socket or api.base_url
        raise OperationError(
            f"the glacierd daemon is not reachable at {where} ({exc})",
            "start it with 'systemctl start glacierd' (or 'glacierd serve')",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ApiError(resp.status, f"unexpected answer from the daemon: {text[:200]}") from None
    if resp.status >= 400:
        fields = data if isinstance(data, dict) else {}
        raise ApiError(
            resp.status,
            str(fields.get("error", text)),
            detail=fields.get("detail"),
            fix=fields.get("fix"),
        )
    return data
