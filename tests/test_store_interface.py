"""What each store says about itself: how it reads notifications (``interpret``), and the
store-agnostic dispatch that records that news in the catalog as a compare-and-set.

The catalog side runs for real (PostgreSQL, a backup on the local vault); the S3 and vault
stores interpret without a client, as they do in the daemon.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_type_hints

import pytest

from glacierd.catalog import archives as aq
from glacierd.catalog import status
from glacierd.config import S3StoreConfig, VaultStoreConfig, config_from_dict
from glacierd.context import Context, open_context
from glacierd.notifications.dispatch import dispatch
from glacierd.notifications.events import parse_events
from glacierd.operations.backup import run_backup
from glacierd.operations.retrieval import Poller, no_follow_up
from glacierd.stores.base import (
    READABLE_AT_ONCE,
    ExpectedRetrieval,
    RetrievalState,
    StoreNews,
)
from glacierd.stores.local import LocalStore
from glacierd.stores.s3 import S3Store
from glacierd.stores.s3.events import S3RestoreEvent
from glacierd.stores.vault import VaultStore
from glacierd.stores.vault.events import VaultJobEvent

EXPIRY = datetime(2026, 3, 9, tzinfo=UTC)
DONE = datetime(2026, 3, 2, 17, 21, 39, tzinfo=UTC)


def s3_event(kind: str, key: str, bucket: str = "acme-backups") -> S3RestoreEvent:
    return S3RestoreEvent(bucket, key, kind, EXPIRY if kind == "completed" else None, DONE)  # type: ignore[arg-type]


def job_event(status_code: str, message: str | None = None) -> VaultJobEvent:
    return VaultJobEvent("job-7", "ARCHIVE-ID", status_code, message, DONE)  # type: ignore[arg-type]


S3 = S3Store("s3", S3StoreConfig(bucket="acme-backups", prefix="prod/"))
VAULT = VaultStore("vault", VaultStoreConfig(vault="acme"))


# --------------------------------------------------------------------------- interpret


def test_s3_reads_restore_events_of_its_own_bucket_and_prefix() -> None:
    assert S3.interpret(s3_event("completed", "prod/files/a")) == [
        StoreNews("files/a", RetrievalState("ready", ready_until=EXPIRY))
    ]
    assert S3.interpret(s3_event("posted", "prod/db/1")) == [
        StoreNews("db/1", RetrievalState("pending"))
    ]
    # An expiry ends only a ready copy, never a newer retrieval.
    assert S3.interpret(s3_event("deleted", "prod/db/1")) == [
        StoreNews(
            "db/1",
            RetrievalState("available", reason="the restored copy expired"),
            only_from=("ready",),
        )
    ]
    assert S3.interpret(s3_event("completed", "staging/db/1")) == []  # outside the prefix
    assert S3.interpret(s3_event("completed", "prod/db/1", bucket="other")) == []
    assert S3.interpret(job_event("Succeeded")) == []  # a vault's job: not ours


def test_a_vault_reads_job_messages_by_job_and_archive_id() -> None:
    assert VAULT.interpret(job_event("Succeeded")) == [
        StoreNews(
            "ARCHIVE-ID",
            RetrievalState("ready", ready_until=DONE + timedelta(hours=24), job_id="job-7"),
        )
    ]
    assert VAULT.interpret(job_event("Failed", "out of capacity")) == [
        StoreNews(
            "ARCHIVE-ID",
            RetrievalState(
                "available",
                job_id="job-7",
                reason="Glacier retrieval job failed: out of capacity",
            ),
        )
    ]
    assert VAULT.interpret(job_event("InProgress")) == [
        StoreNews("ARCHIVE-ID", RetrievalState("pending", job_id="job-7"))
    ]
    assert VAULT.interpret(s3_event("completed", "prod/db/1")) == []


def test_the_local_vault_sends_no_notifications(tmp_path: Path) -> None:
    local = LocalStore("local", tmp_path)
    assert local.interpret(s3_event("completed", "db/1")) == []
    assert local.interpret(job_event("Succeeded")) == []


def test_store_statuses_are_the_transition_tables_words() -> None:
    # What a store may report is a status the table knows, with an edge news may take.
    assert get_type_hints(RetrievalState)["status"] == status.StoreStatus
    assert status.STORE_STATUSES == ("available", "pending", "ready")
    assert status.ORDER[: len(status.STORE_STATUSES)] == status.STORE_STATUSES
    for reported in status.STORE_STATUSES:
        assert status.sources_for(reported, status.NEWS), reported


# ------------------------------------------------------------------ expected retrieval


def test_each_store_has_one_table_of_retrieval_times(tmp_path: Path) -> None:
    hour = 3600.0
    assert S3.expected_retrieval("GLACIER", "Standard") == ExpectedRetrieval(3 * hour, 5 * hour)
    assert S3.expected_retrieval("DEEP_ARCHIVE", "Bulk") == ExpectedRetrieval(48 * hour, 48 * hour)
    assert S3.expected_retrieval("DEEP_ARCHIVE", "Expedited") is None  # no such tier
    assert S3.expected_retrieval("GLACIER_IR", "Bulk") == READABLE_AT_ONCE
    assert S3.expected_retrieval(None, "Expedited") == ExpectedRetrieval(60, 300)  # GLACIER
    assert VAULT.expected_retrieval("GLACIER_VAULT", "Bulk") == ExpectedRetrieval(
        5 * hour, 12 * hour
    )
    slow = LocalStore("local", tmp_path, retrieval_delay_seconds=90)
    assert slow.expected_retrieval("LOCAL_ARCHIVE", "Expedited") == ExpectedRetrieval(90, 90)

    # The dry run's estimates are the longest waits of the tiers offered.
    assert S3.retrieval_estimates("DEEP_ARCHIVE") == {"Standard": 12 * hour, "Bulk": 48 * hour}
    assert S3.retrieval_estimates("STANDARD") == {"Expedited": 0, "Standard": 0, "Bulk": 0}
    assert VAULT.retrieval_estimates(None) == {
        "Expedited": 300,
        "Standard": 5 * hour,
        "Bulk": 12 * hour,
    }
    assert slow.retrieval_estimates(None) == {"Expedited": 90, "Standard": 90, "Bulk": 90}


@pytest.mark.parametrize(
    ("store", "storage_class", "tier", "seconds"),
    [
        (S3, "GLACIER", "Expedited", 30),  # a twelfth of a minute: the floor
        (S3, "GLACIER", "Standard", 900),  # 3 h / 12
        (S3, "GLACIER", "Bulk", 1500),  # 5 h / 12
        (S3, "DEEP_ARCHIVE", "Bulk", 1800),  # the ceiling
        (S3, "DEEP_ARCHIVE", "Expedited", 1800),  # not offered: the default tier's pace
        (S3, "GLACIER", None, 900),  # no tier recorded: the default (Standard)
        (VAULT, "GLACIER_VAULT", "Standard", 900),
    ],
)
def test_the_poll_pace_follows_the_stores_expectation(
    store: Any, storage_class: str, tier: str | None, seconds: float
) -> None:
    poller = Poller(SimpleNamespace(store=store), on_ready=no_follow_up)  # type: ignore[arg-type]
    assert poller.interval({"storage_class": storage_class, "retrieval_tier": tier}) == seconds
    quick = Poller(SimpleNamespace(store=store), 0.5, on_ready=no_follow_up)  # type: ignore[arg-type]
    assert quick.interval({}) == 0.5


# ---------------------------------------------------------------------------- dispatch


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict], tmp_path: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Context]:
        settings = make_settings(
            store={
                "type": "local",
                "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 3600},
            }
        )
        async with open_context(config_from_dict(settings)) as context:
            yield context

    return opened


async def _dump(ctx: Context) -> dict[str, Any]:
    row = await ctx.catalog.pool.fetchrow(
        f"SELECT * FROM {ctx.catalog.schema_sql}.archives WHERE kind = 'database'"
    )
    assert row is not None
    return dict(row)


async def _set(ctx: Context, archive_id: int, sql: str) -> dict[str, Any]:
    await ctx.catalog.pool.execute(
        f"UPDATE {ctx.catalog.schema_sql}.archives SET {sql} WHERE id = $1", archive_id
    )
    row = await aq.get(ctx.catalog.pool, ctx.catalog, archive_id)
    assert row is not None
    return row


async def test_s3_news_through_dispatch(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        row = await _dump(ctx)
        monkeypatch.setattr(ctx.store, "interpret", S3.interpret)
        key = "prod/" + row["store_key"]
        await _set(ctx, row["id"], "retrieval_status = 'pending'")

        # A Delete (the copy of an older restore expired) must not cancel this retrieval.
        assert await dispatch(ctx, s3_event("deleted", key), no_follow_up) == 0
        assert (await _set(ctx, row["id"], "id = id"))["retrieval_status"] == "pending"
        # Events about other buckets and prefixes change nothing.
        assert await dispatch(ctx, s3_event("completed", key, bucket="other"), no_follow_up) == 0
        assert await dispatch(ctx, s3_event("completed", "prod/not-an-archive"), no_follow_up) == 0

        assert await dispatch(ctx, s3_event("completed", key), no_follow_up) == 1
        ready = await _set(ctx, row["id"], "id = id")
        assert (ready["retrieval_status"], ready["ready_until"]) == ("ready", EXPIRY)
        # A duplicate is a no-op.
        assert await dispatch(ctx, s3_event("completed", key), no_follow_up) == 0

        assert await dispatch(ctx, s3_event("deleted", key), no_follow_up) == 1
        expired = await _set(ctx, row["id"], "id = id")
        assert expired["retrieval_status"] == "available"
        assert expired["retrieval_error"] == "the restored copy expired"


async def test_a_job_we_never_recorded_is_found_by_its_archive(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash between InitiateJob and the catalog update loses the job id; the job's
    # message still finds its archive by the ArchiveId (the vault's store key).
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        row = await _dump(ctx)
        monkeypatch.setattr(ctx.store, "interpret", VAULT.interpret)
        await _set(ctx, row["id"], "retrieval_status = 'pending', retrieval_job_id = NULL")
        message = {
            "Action": "ArchiveRetrieval",
            "ArchiveId": row["store_key"],
            "JobId": "job-lost",
            "StatusCode": "Succeeded",
            "CompletionDate": datetime.now(UTC).isoformat(),
        }
        [event] = parse_events(json.dumps(message))
        assert await dispatch(ctx, event, no_follow_up) == 1
        after = await _set(ctx, row["id"], "id = id")
        assert (after["retrieval_status"], after["retrieval_job_id"]) == ("ready", "job-lost")
