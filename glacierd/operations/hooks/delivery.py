"""Delivering one event to one hook: the webhook POST and the command run, each bounded by
``hooks.timeout_seconds``. A failure is returned as one sentence (None: delivered)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from typing import Any

import aiohttp
from prometheus_client import Counter

from glacierd import __version__
from glacierd.config import HooksConfig
from glacierd.sources.processes import read_limited, stop_process

#: Process-local: attempts since this process started, by hook and outcome (sent, failed).
HOOK_DELIVERIES = Counter(
    "glacierd_hook_deliveries",
    "Hook delivery attempts by this process, by hook and outcome.",
    ["hook", "outcome"],
    registry=None,
)

#: What the command hook inherits of glacierd's environment: nothing secret (no PGPASSWORD,
#: AWS keys or API token); the event comes as GLACIERD_EVENT_* variables and on stdin.
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: How much of the command's output a failure quotes.
_QUOTED = 500


def payload(row: dict[str, Any], store: str) -> dict[str, Any]:
    """The event as hooks receive it. ``id`` is the same for every attempt and every hook:
    a receiver drops a duplicate by it."""
    return {
        "id": row["event_id"],
        "event": row["event"],
        "backup_id": row["backup_id"],
        "restore_id": row["restore_id"],
        "reason": row["reason"],
        "occurred_at": row["occurred_at"].isoformat(),
        "details": row["details"],
        "host": socket.gethostname(),
        "store": store,
        "attempt": row["attempts"],
    }


async def post_webhook(cfg: HooksConfig, body: dict[str, Any]) -> str | None:
    """POST the event; any 2xx answer is a delivery (redirects are not followed)."""
    assert cfg.webhook_url is not None
    headers = {
        "User-Agent": f"glacierd/{__version__}",
        "X-Glacierd-Event": body["event"],
        "X-Glacierd-Event-Id": str(body["id"]),
    }
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds)
    where = f"the webhook at {cfg.webhook_host}"  # never the URL: its path may be a secret
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                cfg.webhook_url, json=body, headers=headers, allow_redirects=False
            ) as response,
        ):
            if 200 <= response.status < 300:
                return None
            text = (await response.content.read(_QUOTED)).decode(errors="replace").strip()
            return f"{where} answered {response.status}" + (f": {text}" if text else "")
    except TimeoutError:
        return f"{where} did not answer within {cfg.timeout_seconds:g} s"
    except aiohttp.ClientError as exc:
        return f"{where} could not be reached ({exc.__class__.__name__}: {exc})"


def command_env(body: dict[str, Any]) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(
        {
            "GLACIERD_EVENT": body["event"],
            "GLACIERD_EVENT_ID": str(body["id"]),
            "GLACIERD_BACKUP_ID": "" if body["backup_id"] is None else str(body["backup_id"]),
            "GLACIERD_RESTORE_ID": "" if body["restore_id"] is None else str(body["restore_id"]),
            "GLACIERD_REASON": body["reason"] or "",
        }
    )
    return env


async def run_command(cfg: HooksConfig, body: dict[str, Any]) -> str | None:
    """Run the command (an argument list, no shell) with the event as JSON on its stdin;
    exit status 0 is a delivery. The run and any helper it starts are killed at the limit."""
    program = cfg.command[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cfg.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=command_env(body),
            start_new_session=True,
        )
    except OSError as exc:
        return f"the hook command {program} could not be started ({exc.strerror or exc})"
    assert proc.stdin is not None and proc.stdout is not None
    output = asyncio.ensure_future(read_limited(proc.stdout))
    try:
        async with asyncio.timeout(cfg.timeout_seconds):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(json.dumps(body).encode() + b"\n")
                await proc.stdin.drain()
            proc.stdin.close()
            code = await proc.wait()
            said = (await output).strip()[-_QUOTED:]
    except TimeoutError:
        await _stop(proc, output)
        return f"the hook command {program} did not finish within {cfg.timeout_seconds:g} s"
    except BaseException:
        await _stop(proc, output)
        raise
    if code == 0:
        return None
    return f"the hook command {program} exited with {code}" + (f": {said}" if said else "")


async def _stop(proc: asyncio.subprocess.Process, output: asyncio.Future[str]) -> None:
    """Kill the command and its helpers; stop_process drains the output pipe itself."""
    output.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await output
    await stop_process(proc, (proc.stdout,))


async def deliver(cfg: HooksConfig, hook: str, body: dict[str, Any]) -> str | None:
    """One attempt; why it failed, or None."""
    failure = await (post_webhook(cfg, body) if hook == "webhook" else run_command(cfg, body))
    HOOK_DELIVERIES.labels(hook, "failed" if failure else "sent").inc()
    return failure
