"""``glacierd check``: the health evaluation for monitoring systems (Nagios, cron, a
Kubernetes-style probe), straight against the catalog and the store.

It does not ask the daemon: it must answer when the daemon is down or hung, and its answer
is the same evaluation ``GET /health`` runs. Exit 0 when healthy (one summary line), 1
when not (one line per problem: ``check: sentence``), 2 for a configuration error. It
creates nothing: no catalog schema, no log file; a catalog that does not exist yet is a
problem.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from glacierd.catalog import Catalog, CatalogError
from glacierd.catalog.migrations import catalog_state
from glacierd.config import Config
from glacierd.context import Context
from glacierd.health.checks import evaluate
from glacierd.health.model import Health, Problem, duration
from glacierd.stores.base import StoreError
from glacierd.stores.factory import build_store

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
HELP = "check health for monitoring: exit 0 if healthy, 1 with one line per problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print what GET /health returns")


async def cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    health = await check(cfg)
    if args.json:
        print(json.dumps(health.as_json(), indent=2))
    elif health.healthy:
        print(_summary(health))
    else:
        for problem in health.problems:
            print(f"{problem.check}: {problem.message}")
    return EXIT_HEALTHY if health.healthy else EXIT_UNHEALTHY


def _summary(health: Health) -> str:
    last, since = health.facts.get("last_successful_backup"), health.facts.get("last_success_at")
    if last is None or since is None:
        return "glacierd is healthy: no backup has completed yet"
    ago = duration((health.time - datetime.fromisoformat(since)).total_seconds())
    return f"glacierd is healthy: last successful backup {last} finished {ago} ago"


async def check(cfg: Config) -> Health:
    now = datetime.now(UTC)
    catalog = Catalog(cfg.catalog.conninfo, cfg.catalog.schema)
    try:
        await catalog.open()
    except CatalogError as exc:
        return Health(now, [Problem("catalog", str(exc))])
    try:
        problem = await _schema_problem(catalog)
        if problem is not None:
            return Health(now, [problem])
        store = build_store(cfg.store)
        try:
            await store.open()
        except StoreError as exc:
            health = await evaluate(Context(cfg, catalog, store), now, skip={"store"})
            health.problems.append(Problem("store", str(exc)))
            return health
        try:
            return await evaluate(Context(cfg, catalog, store), now)
        finally:
            await store.close()
    finally:
        await catalog.close()


async def _schema_problem(catalog: Catalog) -> Problem | None:
    try:
        state = await catalog_state(catalog)
    except Exception as exc:
        return Problem("catalog", f"the catalog cannot be read ({str(exc).rstrip('.')})")
    if not state.exists:
        return Problem(
            "catalog",
            f"the catalog schema {catalog.schema} does not exist yet",
            "start the daemon or run 'glacierd migrate'",
        )
    if state.pending:
        return Problem(
            "catalog",
            f"the catalog schema {catalog.schema} lacks {', '.join(state.pending)}, which this "
            "glacierd brings",
            "restart the daemon (or run 'glacierd migrate')",
        )
    return None
