"""``glacierd serve``: wire everything, recover, listen, schedule, and shut down cleanly.

Start-up order: catalog + migrations, store, recovery of interrupted work, listeners,
scheduler, then READY=1 for systemd. On SIGTERM/SIGINT: STOPPING=1, stop the scheduler and
the listeners (no new work), give running work ``shutdown_timeout_seconds`` to finish, then
cancel it — a cancelled backup records itself failed and removes its partial upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
from aiohttp import web

from glacierd import sdnotify
from glacierd.api.control import control_app
from glacierd.config import Config
from glacierd.context import Context, open_context
from glacierd.operations.recovery import recover_interrupted
from glacierd.scheduler import start_scheduler

log = structlog.get_logger("glacierd.service")


async def _start_site(app: web.Application, *, host: str | None, port: int | None,
                      socket_path: str | None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if socket_path:
        site = web.UnixSite(runner, socket_path)
    else:
        site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def extra_components(ctx: Context) -> tuple[list[dict[str, Any]], list[web.Application]]:
    """Scheduler jobs and extra listeners that later features add (polling, SNS)."""
    return [], []


async def serve(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with open_context(config) as ctx:
        interrupted = await recover_interrupted(ctx)
        runners: list[web.AppRunner] = []
        api = config.api
        try:
            runners.append(await _start_site(
                control_app(ctx), host=api.host, port=api.port,
                socket_path=str(api.socket) if api.socket else None,
            ))
        except OSError as exc:
            where = api.socket or f"{api.host}:{api.port}"
            log.error("service.listen_failed", listener="control", error=str(exc))
            print(f"glacierd: cannot listen on {where} ({exc.strerror}); stop what uses it or "
                  "change [api] port/socket.", flush=True)
            return 1
        scheduler = await start_scheduler(ctx)
        sdnotify.notify("READY=1\nSTATUS=glacierd is running")
        log.info("service.ready", api=str(api.socket) if api.socket else api.base_url,
                 store=ctx.store.name, store_type=ctx.store.type, recovered=interrupted)

        await stop.wait()

        sdnotify.notify("STOPPING=1\nSTATUS=glacierd is stopping")
        log.info("service.stopping", running_tasks=len(ctx.tasks))
        scheduler.shutdown(wait=False)
        for runner in runners:
            await runner.cleanup()
        await _drain(ctx, config.shutdown_timeout_seconds)
    log.info("service.stopped")
    return 0


async def _drain(ctx: Context, timeout: float) -> None:
    """Let running work finish within ``timeout``; cancel (cleanly abandon) what remains."""
    tasks = list(ctx.tasks)
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.warning("service.abandoning", task=task.get_name(), timeout_s=timeout)
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=max(5.0, timeout / 2))
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()
