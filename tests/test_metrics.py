"""``GET /metrics``: Prometheus text, values after a known sequence of real operations, and
the catalog's totals surviving a restart of the real daemon."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from glacierd.api.metrics import render_metrics
from glacierd.catalog import restores as restore_rows
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import start_restore
from glacierd.operations.retrieval import retrieve_backup
from glacierd.sources.database import DatabaseSourceError
from tests.daemon import Daemon
from tests.wiring import wired

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the exposition, by (name, sorted labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[Context]:
        async with open_context(config_from_dict(make_settings(**overrides))) as context:
            yield context

    return opened


async def settle(ctx: Context) -> None:
    while ctx.tasks:
        await asyncio.gather(*list(ctx.tasks), return_exceptions=True)


async def test_metrics_after_a_known_sequence(
    open_ctx: Callable[..., Any],
    make_settings: Callable[..., dict],
    files_root: Path,
    tmp_path: Path,
) -> None:
    database = make_settings()["database"]
    async with open_ctx() as ctx:
        empty = samples((await render_metrics(ctx))[0].decode())
        ok = await run_backup(ctx, "cli")
    async with open_ctx(database={**database, "pg_dump": "/nonexistent/pg_dump"}) as ctx:
        with pytest.raises(DatabaseSourceError):
            await run_backup(ctx, "cli")
    async with open_ctx() as ctx:
        # The dump is readable at once: it is retrieved, downloaded and verified.
        with wired(ctx) as workers:
            await retrieve_backup(ctx, ok["backup_id"], on_ready=workers.fetcher.enqueue)
            await settle(ctx)
        # A restore that fails (here: it is failed by hand right after being requested).
        request = await start_restore(
            ctx, ok["backup_id"], {"tier": None, "database": True, "files": False}
        )
        assert await restore_rows.set_state(
            ctx.catalog.pool, ctx.catalog, request["id"], "failed", "given up by the test"
        )
    shutil.rmtree(files_root)  # the files must now be retrieved: they wait an hour
    files_root.mkdir()
    slow = {
        "type": "local",
        "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 3600},
    }
    async with open_ctx(store=slow) as ctx:
        await retrieve_backup(ctx, ok["backup_id"], on_ready=lambda _: None)
        text = (await render_metrics(ctx))[0].decode()
        pool, schema = ctx.catalog.pool, ctx.catalog.schema_sql
        dump_size = await pool.fetchval(
            f"SELECT size FROM {schema}.archives WHERE kind = 'database' AND state = 'stored'"
        )
        finished = await pool.fetchval(
            f"SELECT finished_at FROM {schema}.backups WHERE id = $1", ok["backup_id"]
        )

    assert value(empty, "glacierd_backups_total", outcome="completed") == 0
    assert value(empty, "glacierd_last_success_timestamp_seconds") == 0
    found = samples(text)
    assert value(found, "glacierd_backups_total", outcome="completed") == 1
    assert value(found, "glacierd_backups_total", outcome="failed") == 1
    assert value(found, "glacierd_backup_duration_seconds_count", outcome="completed") == 1
    assert value(found, "glacierd_backup_duration_seconds_sum", outcome="completed") > 0
    assert value(found, "glacierd_restores_total", outcome="failed") == 1
    assert value(found, "glacierd_restores_total", outcome="restored") == 0
    # The dump and three files went up, once each; only the dump came back.
    assert value(found, "glacierd_uploaded_objects_total") == 4
    assert value(found, "glacierd_uploaded_bytes_total") == ok["bytes_uploaded"]
    assert value(found, "glacierd_downloaded_objects_total") == 1
    assert value(found, "glacierd_downloaded_bytes_total") == dump_size
    assert value(found, "glacierd_archives", store="local", status="local") == 1
    assert value(found, "glacierd_archives", store="local", status="pending") == 3
    assert value(found, "glacierd_pending_retrievals") == 3
    assert value(found, "glacierd_last_success_timestamp_seconds") == finished.timestamp()
    assert value(found, "glacierd_running_backups") == 0
    assert value(found, "glacierd_active_restores") == 0


def test_metrics_over_http_survive_a_restart(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    started = d.request("POST", "/backups", {}).json()
    assert d.wait_backup(started["id"])["status"] == "completed"
    response = d.request("GET", "/metrics")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    before = samples(response.body.decode())
    assert value(before, "glacierd_backups_total", outcome="completed") == 1
    assert ("process_resident_memory_bytes", ()) in before  # process-local, by nature
    d.stop()
    d.start()
    after = samples(d.request("GET", "/metrics").body.decode())
    for name in ("glacierd_backups_total", "glacierd_uploaded_bytes_total"):
        kept = {k: v for k, v in before.items() if k[0] == name}
        assert kept and all(after[k] == v for k, v in kept.items()), name
    d.stop()


def test_metrics_need_the_token(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> None:
    d = daemon_factory(env={"GLACIERD_API_TOKEN": "s3cret-token"})
    assert d.request("GET", "/metrics").status == 401
    ok = d.request("GET", "/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200 and b"glacierd_backups_total" in ok.body
    d.stop()
