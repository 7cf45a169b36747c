"""``glacierd serve``: wire everything, recover, listen, schedule, and shut down cleanly.

Start-up order: catalog + migrations, store, recovery of interrupted work, listeners,
scheduler, then READY=1 for systemd. On SIGTERM/SIGINT: STOPPING=1 and ``ctx.stopping`` (no
new work: the scheduler pauses, the SNS listener closes, the control API answers 503 to
anything but reads), then every kind of running work — backups, downloads, restore ticks,
polls, and anything they started before the flag was set — gets ``shutdown_timeout_seconds``
in all to finish; what is left is cancelled (a cancelled backup records itself failed and
removes its partial upload; a restore resumes at the next start). Then the control API
closes and glacierd exits 0. SIGHUP re-reads the configuration file (reload.py); with
systemd's WatchdogSec= the event loop pings the watchdog (sdnotify.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from glacierd import sdnotify
from glacierd.api.control import control_app
from glacierd.api.errors import Handler, error_response
from glacierd.api.listener import connection_limit, quiet_accept_errors, start_listener
from glacierd.api.sns import sns_app
from glacierd.config import Config
from glacierd.context import Context, open_context
from glacierd.debounce import Debounced
from glacierd.notifications.sns import SnsVerifier
from glacierd.notifications.sqs import start_consumer
from glacierd.operations.fetch import Fetcher
from glacierd.operations.hooks import HookDispatcher
from glacierd.operations.recovery import recover_interrupted
from glacierd.operations.restore import RestoreDriver
from glacierd.operations.retrieval import MIN_POLL_SECONDS, Poller
from glacierd.reload import Reloader
from glacierd.scheduler import start_scheduler

log = structlog.get_logger("glacierd.service")

# Downloads that end within this long of each other cause one restore advance, not one each.
RESTORE_KICK_SETTLE_SECONDS = 0.5


@dataclass
class Workers:
    """The daemon's background workers, wired to each other through callbacks (operations
    never look them up): an archive found ready goes to the fetcher; a download that ended
    kicks the restore requests, debounced."""

    fetcher: Fetcher
    restorer: RestoreDriver
    restore_kick: Debounced

    def close(self) -> None:
        """Take no new downloads (shutdown); running ones finish or are cancelled."""
        self.fetcher.closed = True


def wire_workers(ctx: Context, *, settle: Callable[[], Awaitable[object]] | None = None) -> Workers:
    """The fetcher, the restore driver and the debounced restore kick, as ``serve`` runs
    them (tests build the same; ``settle`` is the kick's pause)."""

    def kick_restores(archive_id: int) -> None:
        restore_kick.kick()  # a restore may be waiting for (or fail on) this archive

    fetcher = Fetcher(ctx, on_fetched=kick_restores)
    restorer = RestoreDriver(ctx, fetcher)
    restore_kick = Debounced(
        restorer.advance_all,
        spawn=ctx.spawn,
        settle=settle or (lambda: asyncio.sleep(RESTORE_KICK_SETTLE_SECONDS)),
        # Stopping: a request simply resumes at the next start.
        enabled=lambda: not ctx.stopping,
        name="restore-advance",
    )
    return Workers(fetcher, restorer, restore_kick)


async def _start_site(
    app: web.Application,
    listener: str,
    *,
    host: str | None,
    port: int | None,
    socket_path: str | None,
) -> web.AppRunner:
    """Start one listener with header/body timeouts and a connection cap (api/listener.py).
    The public SNS listener gets a quarter of the descriptors at most, the loopback control
    API an eighth: a flood on one never starves the other, the catalog or a backup."""
    share, ceiling = (4, 512) if listener == "sns" else (8, 128)
    return await start_listener(
        app,
        listener,
        max_connections=connection_limit(share, ceiling),
        host=host,
        port=port,
        socket_path=socket_path,
    )


def refuse_work_while_stopping(ctx: Context) -> Middleware:
    """Control-API middleware: once stopping, only reads are answered; anything that would
    start work (a backup, a restore, a retrieval, a deletion) gets 503."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if ctx.stopping and request.method not in ("GET", "HEAD", "OPTIONS"):
            return error_response(
                503,
                "glacierd is stopping and takes no new work; send the request again once it "
                "has restarted.",
            )
        return await handler(request)

    return middleware


def _poll_job(ctx: Context, poller: Poller) -> dict[str, Any]:
    """Polling runs at the fastest tier's pace; the poller skips archives not yet due."""
    interval = ctx.config.schedule.poll_interval_seconds or MIN_POLL_SECONDS
    return {
        "func": poller.poll_once,
        "trigger": "interval",
        "seconds": interval,
        "id": "poll",
        "coalesce": True,
        "max_instances": 1,
        "next_run_time": datetime.now(UTC),
    }


def _restore_job(ctx: Context, driver: RestoreDriver) -> dict[str, Any]:
    """Restore requests advance every few seconds (cheap: one catalog query when idle), and
    once right at start so an interrupted restore resumes."""
    interval = min(5.0, ctx.config.schedule.poll_interval_seconds or 5.0)
    return {
        "func": driver.advance_all,
        "trigger": "interval",
        "seconds": interval,
        "id": "restores",
        "coalesce": True,
        "max_instances": 1,
        "next_run_time": datetime.now(UTC),
    }


async def serve(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = Reloader()  # SIGHUP: reload the configuration (reload.py)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    quiet_accept_errors(loop)

    async with open_context(config) as ctx, contextlib.AsyncExitStack() as stack:
        interrupted = await recover_interrupted(ctx)
        workers = wire_workers(ctx)
        on_ready = workers.fetcher.enqueue
        runners: list[web.AppRunner] = []
        api, sns = config.api, config.sns
        control = control_app(ctx, on_ready=on_ready, kick_restores=workers.restore_kick.kick)
        # Innermost, after the Host and token checks: strangers learn nothing new from it.
        control.middlewares.append(refuse_work_while_stopping(ctx))
        listeners: list[tuple[str, web.Application, str | None, int | None, str | None]] = [
            ("api", control, api.host, api.port, str(api.socket) if api.socket else None)
        ]
        if sns.enabled:
            verifier = await stack.enter_async_context(
                SnsVerifier(
                    sns.topic_arns,
                    cert_url_override=sns.cert_url_override,
                    subscribe_url_override=sns.cert_url_override,
                )
            )
            app = sns_app(ctx, verifier, sns.path, on_ready=on_ready)
            listeners.append(("sns", app, sns.host, sns.port, None))
        for section, app, host, port, socket_path in listeners:
            try:
                runners.append(
                    await _start_site(app, section, host=host, port=port, socket_path=socket_path)
                )
            except OSError as exc:
                where = socket_path or f"{host}:{port}"
                log.error("service.listen_failed", listener=section, error=str(exc))
                print(
                    f"glacierd: cannot listen on {where} ({exc.strerror}); stop what uses it "
                    f"or change [{section}] port.",
                    flush=True,
                )
                for runner in runners:
                    await runner.cleanup()
                return 1
        sqs = await start_consumer(ctx, stack, on_ready)  # [sqs]: None when not enabled
        poller = Poller(ctx, config.schedule.poll_interval_seconds, on_ready=on_ready)

        def interval_jobs() -> list[dict[str, Any]]:
            return [_poll_job(ctx, poller), _restore_job(ctx, workers.restorer)]

        scheduler = await start_scheduler(ctx, interval_jobs())
        reloader.attach(ctx, scheduler, poller, interval_jobs)
        if not api.token:
            log.warning(
                "api.no_token",
                detail=f"the control API accepts any local process; set {api.token_env} "
                "(see deploy/install.sh) to require a bearer token",
            )
        hooks = HookDispatcher(ctx)  # tells the hooks about backups and restores that ended
        hooks.start()
        watchdog = sdnotify.start_watchdog()  # WatchdogSec=: pings from this event loop
        sdnotify.notify("READY=1\nSTATUS=glacierd is running")
        log.info(
            "service.ready",
            api=str(api.socket) if api.socket else api.base_url,
            sns=f"http://{sns.host}:{sns.port}{sns.path}" if sns.enabled else None,
            sqs=config.sqs.queue_url if config.sqs.enabled else None,
            store=ctx.store.name,
            store_type=ctx.store.type,
            recovered=interrupted,
        )

        await stop.wait()

        ctx.stopping = True
        sdnotify.notify("STOPPING=1\nSTATUS=glacierd is stopping")
        log.info("service.stopping", running_tasks=len(ctx.tasks))
        scheduler.pause()  # running jobs go on (they are ctx tasks); no new runs start
        workers.close()
        if sqs is not None:
            sqs.stop()  # the long poll ends now; messages received are still applied
        await hooks.stop()  # a delivery cut off is made again after the next start
        # The control API (runners[0]) stays up during the drain to answer 503 to new work;
        # the SNS endpoint closes now (SNS redelivers what it could not post).
        for runner in runners[1:]:
            await runner.cleanup()
        await _drain(ctx, ctx.config.shutdown_timeout_seconds)  # as last reloaded
        scheduler.shutdown(wait=False)
        await runners[0].cleanup()
    log.info("service.stopped")
    if watchdog is not None:
        watchdog.cancel()
    return 0


async def _wait_all(ctx: Context, seconds: float) -> None:
    """Wait up to ``seconds`` until ctx.tasks is empty, including tasks spawned meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while ctx.tasks and (left := deadline - loop.time()) > 0:
        await asyncio.wait(set(ctx.tasks), timeout=left)


async def _drain(ctx: Context, budget: float) -> None:
    """Let all running work finish within ``budget`` seconds; cancel (cleanly abandon) the
    rest and give it a bounded time to clean up."""
    await _wait_all(ctx, budget)
    for task in set(ctx.tasks):
        log.warning("service.abandoning", task=task.get_name(), timeout_s=budget)
        task.cancel()
    await _wait_all(ctx, max(5.0, budget / 2))
    for task in set(ctx.tasks):
        log.error("service.task_stuck", task=task.get_name())
