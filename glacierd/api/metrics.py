"""``GET /metrics``: the Prometheus text format (prometheus-client), computed at scrape time.

What lives in the catalog is read from it on every scrape, so it survives restarts and is
the same whichever process serves it: backups and restores by outcome and their durations,
objects and bytes uploaded and downloaded (totals kept by the catalog's triggers, migration
0008), archives by status, pending retrievals, the last success, running work. Only what a
process does by itself is process-local and starts from zero at each start: the hook
deliveries (``glacierd_hook_deliveries_total``) and the process's own ``process_*`` figures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from glacierd import __version__
from glacierd.catalog import monitoring as rows
from glacierd.context import Context
from glacierd.operations.hooks import HOOK_DELIVERIES

BACKUP_OUTCOMES = ("completed", "failed")
RESTORE_OUTCOMES = ("restored", "failed")


class _Families(Collector):
    """Metric families read before rendering (collectors are synchronous; the catalog is not)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def render_metrics(ctx: Context, accept: str = "") -> tuple[bytes, str]:
    """The exposition and its content type: the text format 0.0.4 that every Prometheus
    reads, or what the scraper's Accept header asks for (OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await catalog_families(ctx)))
    registry.register(HOOK_DELIVERIES)
    ProcessCollector(namespace="", registry=registry)
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def metrics_handler(ctx: Context) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(request: web.Request) -> web.Response:
        body, content_type = await render_metrics(ctx, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


def _outcomes(
    counters: dict[str, float], what: str, outcomes: tuple[str, ...]
) -> tuple[CounterMetricFamily, SummaryMetricFamily]:
    total = CounterMetricFamily(
        f"glacierd_{what}s", f"{what.capitalize()}s that ended, by outcome.", labels=["outcome"]
    )
    seconds = SummaryMetricFamily(
        f"glacierd_{what}_duration_seconds",
        f"How long the {what}s that ended took, by outcome.",
        labels=["outcome"],
    )
    for outcome in outcomes:
        count = counters.get(f"{what}s_{outcome}", 0.0)
        total.add_metric([outcome], count)
        seconds.add_metric(
            [outcome],
            count_value=round(count),
            sum_value=counters.get(f"{what}_seconds_{outcome}", 0.0),
        )
    return total, seconds


def _transfers(counters: dict[str, float]) -> Iterator[Metric]:
    for direction in ("uploaded", "downloaded"):
        yield CounterMetricFamily(
            f"glacierd_{direction}_objects",
            f"Archives {direction} (and verified) since the catalog was created.",
            value=counters.get(f"{direction}_objects", 0.0),
        )
        yield CounterMetricFamily(
            f"glacierd_{direction}_bytes",
            f"Bytes of the archives {direction} since the catalog was created.",
            value=counters.get(f"{direction}_bytes", 0.0),
        )


def _archives(groups: list[dict[str, Any]]) -> Iterator[Metric]:
    """Stored archives by retrieval status; unfinished uploads and deletions by their state."""
    count = GaugeMetricFamily(
        "glacierd_archives",
        "Archives in the catalog, by store and status.",
        labels=["store", "status"],
    )
    size = GaugeMetricFamily(
        "glacierd_archive_bytes",
        "Bytes of the archives in the catalog, by store and status.",
        labels=["store", "status"],
    )
    totals: dict[tuple[str, str], list[float]] = {}
    for g in groups:
        status = g["retrieval_status"] if g["state"] == "stored" else g["state"]
        entry = totals.setdefault((g["store_name"], status), [0.0, 0.0])
        entry[0] += g["count"]
        entry[1] += g["bytes"]
    for (store, status), (n, b) in sorted(totals.items()):
        count.add_metric([store, status], n)
        size.add_metric([store, status], b)
    yield count
    yield size


async def catalog_families(ctx: Context) -> list[Metric]:
    pool, cat = ctx.catalog.pool, ctx.catalog
    counters = await rows.counters(pool, cat)
    groups = await rows.archive_counts(pool, cat)
    overview = await rows.backup_overview(pool, cat)
    pending = sum(
        g["count"]
        for g in groups
        if g["store_name"] == ctx.store.name
        and g["state"] == "stored"
        and g["retrieval_status"] == "pending"
    )
    last = overview["last_success_at"]
    info = GaugeMetricFamily(
        "glacierd_build_info", "glacierd's version and store.", labels=["version", "store", "type"]
    )
    info.add_metric([__version__, ctx.store.name, ctx.store.type], 1)
    return [
        info,
        *_outcomes(counters, "backup", BACKUP_OUTCOMES),
        *_outcomes(counters, "restore", RESTORE_OUTCOMES),
        *_transfers(counters),
        *_archives(groups),
        GaugeMetricFamily(
            "glacierd_pending_retrievals",
            "Retrievals requested from the store and not finished yet.",
            value=pending,
        ),
        GaugeMetricFamily(
            "glacierd_last_success_timestamp_seconds",
            "When the last completed backup finished (Unix time; 0: none yet).",
            value=last.timestamp() if last else 0.0,
        ),
        GaugeMetricFamily(
            "glacierd_running_backups", "Backups running now.", value=overview["running_backups"]
        ),
        GaugeMetricFamily(
            "glacierd_active_restores",
            "Restore requests not yet restored or failed.",
            value=overview["active_restores"],
        ),
    ]
