"""Hooks in-process: a failed backup reaches a real webhook receiver and a real command once;
retries are bounded; a delivery cut off midway is made again, never lost; the command sees
no secrets. Time is each pass's ``now``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from glacierd.catalog import events as event_rows
from glacierd.catalog import restores as restore_rows
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.hooks import HookDispatcher
from glacierd.operations.restore import start_restore
from glacierd.sources.database import DatabaseSourceError
from tests.webhook_receiver import webhook_receiver

# Writes what the hook got (stdin, and its environment) to the file named by argv[1].
RECORDER = """
import json, os, sys
event = json.load(sys.stdin)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"stdin": event, "env": dict(os.environ)}) + "\\n")
"""


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened(
        webhook: str | None = None, failing: bool = False, **overrides: Any
    ) -> AsyncIterator[Context]:
        settings = make_settings(**overrides)
        if failing:  # pg_dump is not where the configuration says: the backup fails
            settings["database"] = {**settings["database"], "pg_dump": "/nonexistent/pg_dump"}
        environ = {"GLACIERD_WEBHOOK_URL": webhook} if webhook else {}
        async with open_context(config_from_dict(settings, environ=environ)) as context:
            yield context

    return opened


async def fail_a_backup(ctx: Context) -> int:
    with pytest.raises(DatabaseSourceError):
        await run_backup(ctx, "cli")
    return await ctx.catalog.pool.fetchval(
        f"SELECT max(id) FROM {ctx.catalog.schema_sql}.backups WHERE status = 'failed'"
    )


async def test_a_failed_backup_reaches_the_webhook_once(open_ctx: Callable[..., Any]) -> None:
    with webhook_receiver() as receiver:
        async with open_ctx(webhook=receiver.url, failing=True) as ctx:
            backup_id = await fail_a_backup(ctx)
            assert await HookDispatcher(ctx).run_once() == 1
            assert await HookDispatcher(ctx).run_once() == 0  # another pass, a "restart"
        [got] = receiver.received
    assert got.body["event"] == "backup.failed"
    assert got.body["backup_id"] == backup_id and got.body["restore_id"] is None
    assert "/nonexistent/pg_dump" in got.body["reason"]
    assert got.body["store"] == "local" and got.body["attempt"] == 1
    assert got.headers["X-Glacierd-Event"] == "backup.failed"
    assert got.headers["X-Glacierd-Event-Id"] == str(got.body["id"])
    assert got.headers["Content-Type"] == "application/json"


async def test_success_is_reported_only_with_on_success(open_ctx: Callable[..., Any]) -> None:
    with webhook_receiver() as receiver:
        async with open_ctx(webhook=receiver.url) as ctx:
            await run_backup(ctx, "cli")
            assert await HookDispatcher(ctx).run_once() == 0
        async with open_ctx(webhook=receiver.url, hooks={"on_success": True}) as ctx:
            second = await run_backup(ctx, "cli")
            assert await HookDispatcher(ctx).run_once() == 1
    # The first success was never queued for a hook; it is not sent later either.
    assert receiver.events() == [("backup.completed", second["backup_id"], None)]
    assert receiver.received[0].body["details"]["new_files"] == 0


async def test_a_failed_restore_reaches_the_webhook(open_ctx: Callable[..., Any]) -> None:
    with webhook_receiver() as receiver:
        async with open_ctx(webhook=receiver.url) as ctx:
            backup = await run_backup(ctx, "cli")
            request = await start_restore(
                ctx, backup["backup_id"], {"tier": None, "database": True, "files": False}
            )
            reason = "the dump failed verification; nothing was changed."
            await restore_rows.set_state(
                ctx.catalog.pool, ctx.catalog, request["id"], "failed", reason
            )
            assert await HookDispatcher(ctx).run_once() == 1
    [got] = receiver.received
    assert receiver.events() == [("restore.failed", backup["backup_id"], request["id"])]
    assert got.body["reason"] == reason


async def test_the_webhook_is_retried_with_growing_pauses_then_given_up(
    open_ctx: Callable[..., Any],
) -> None:
    hooks = {"max_attempts": 3, "retry_seconds": 60}
    with webhook_receiver(statuses=[500, 503, 500, 500]) as receiver:
        async with open_ctx(webhook=receiver.url, failing=True, hooks=hooks) as ctx:
            await fail_a_backup(ctx)
            dispatcher = HookDispatcher(ctx)
            now = datetime.now(UTC)
            assert await dispatcher.run_once(now) == 0  # 500
            assert await dispatcher.run_once(now + timedelta(seconds=59)) == 0  # not due yet
            assert len(receiver.received) == 1
            assert await dispatcher.run_once(now + timedelta(seconds=61)) == 0  # 503
            later = now + timedelta(seconds=61)
            assert await dispatcher.run_once(later + timedelta(seconds=119)) == 0
            assert len(receiver.received) == 2  # the second pause is twice the first
            assert await dispatcher.run_once(later + timedelta(seconds=121)) == 0  # 500: given up
            assert await dispatcher.run_once(later + timedelta(days=1)) == 0
            [delivery] = await event_rows.deliveries(ctx.catalog.pool, ctx.catalog)
    assert [r.body["attempt"] for r in receiver.received] == [1, 2, 3]
    assert len({r.body["id"] for r in receiver.received}) == 1
    assert delivery["state"] == "failed" and delivery["attempts"] == 3
    assert delivery["last_error"] == ("the webhook at 127.0.0.1 answered 500: receiver is down")
    assert "secret-path-token" not in delivery["last_error"]


async def test_a_delivery_cut_off_midway_is_made_again_after_its_lease(
    open_ctx: Callable[..., Any],
) -> None:
    """The daemon dies while the receiver is still answering: the delivery was claimed but
    never recorded. It is neither lost nor sent again at once; after its lease, it is."""
    with webhook_receiver() as receiver:
        async with open_ctx(webhook=receiver.url, failing=True) as ctx:
            await fail_a_backup(ctx)
            receiver.hold.set()
            now = datetime.now(UTC)
            cut = asyncio.create_task(HookDispatcher(ctx).run_once(now))
            await asyncio.to_thread(receiver.arrived.wait, 10)
            cut.cancel()  # as if killed mid-request
            with pytest.raises(asyncio.CancelledError):
                await cut
            receiver.hold.clear()
            restarted = HookDispatcher(ctx)
            assert await restarted.run_once(now + timedelta(seconds=1)) == 0  # leased
            lease = timedelta(seconds=ctx.config.hooks.timeout_seconds * 2 + 61)
            assert await restarted.run_once(now + lease) == 1
            [delivery] = await event_rows.deliveries(ctx.catalog.pool, ctx.catalog)
    assert delivery["state"] == "sent" and delivery["attempts"] == 2
    # The receiver may have taken the first request too: the same event id says it twice.
    assert sorted(r.body["attempt"] for r in receiver.received) == [1, 2]
    assert len({r.body["id"] for r in receiver.received}) == 1


async def test_a_command_hook_gets_the_event_on_stdin_and_no_secrets(
    open_ctx: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("PGPASSWORD", "do-not-leak-either")
    script, record = tmp_path / "record.py", tmp_path / "hook-record.jsonl"
    script.write_text(RECORDER)
    command = [sys.executable, str(script), str(record)]
    async with open_ctx(failing=True, hooks={"command": command}) as ctx:
        backup_id = await fail_a_backup(ctx)
        assert await HookDispatcher(ctx).run_once() == 1
        assert await HookDispatcher(ctx).run_once() == 0
    [line] = record.read_text().splitlines()
    got = json.loads(line)
    assert got["stdin"]["event"] == "backup.failed" and got["stdin"]["backup_id"] == backup_id
    env = got["env"]
    assert env["GLACIERD_EVENT"] == "backup.failed"
    assert env["GLACIERD_BACKUP_ID"] == str(backup_id) and env["GLACIERD_RESTORE_ID"] == ""
    assert env["GLACIERD_REASON"] == got["stdin"]["reason"]
    assert "do-not-leak" not in json.dumps(env)
    assert not {"AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "GLACIERD_API_TOKEN"} & set(env)


async def test_a_failing_or_hanging_command_is_recorded_and_retried(
    open_ctx: Callable[..., Any], tmp_path: Path
) -> None:
    exits = [sys.executable, "-c", "import sys; print('no route to pager'); sys.exit(3)"]
    async with open_ctx(failing=True, hooks={"command": exits}) as ctx:
        await fail_a_backup(ctx)
        assert await HookDispatcher(ctx).run_once() == 0
        [delivery] = await event_rows.deliveries(ctx.catalog.pool, ctx.catalog)
    assert delivery["state"] == "pending" and delivery["attempts"] == 1
    assert delivery["last_error"] == (
        f"the hook command {sys.executable} exited with 3: no route to pager"
    )
    hangs = [sys.executable, "-c", "import time; time.sleep(600)"]
    async with open_ctx(hooks={"command": hangs, "timeout_seconds": 0.5}) as ctx:
        now = datetime.now(UTC) + timedelta(hours=1)  # the retry is due
        assert await HookDispatcher(ctx).run_once(now) == 0
        [delivery] = await event_rows.deliveries(ctx.catalog.pool, ctx.catalog)
    assert delivery["attempts"] == 2
    assert delivery["last_error"] == (
        f"the hook command {sys.executable} did not finish within 0.5 s"
    )


async def test_no_hooks_configured_queues_nothing(open_ctx: Callable[..., Any]) -> None:
    async with open_ctx(failing=True) as ctx:
        await fail_a_backup(ctx)
        assert await HookDispatcher(ctx).run_once() == 0
        assert await event_rows.deliveries(ctx.catalog.pool, ctx.catalog) == []
        queued = await ctx.catalog.pool.fetchval(
            f"SELECT bool_and(queued) FROM {ctx.catalog.schema_sql}.events"
        )
    assert queued is True
