"""Running checks: each bounded in time, independent ones at once, dependent ones in order.

Every check is bounded in time (``CHECK_TIMEOUT``), so a network that drops packets makes one
check fail instead of hanging the command; and every check runs whatever the others found,
except where one cannot work without another (``Check.needs``: reported as skipped, naming
the failed check). Independent checks run concurrently, so the whole run takes about as long
as the slowest chain of checks, however many there are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from glacierd.config import Config
from glacierd.doctor.model import Check, CheckResult, Doctor
from glacierd.doctor.registry import CHECKS
from glacierd.errors import GlacierdError
from glacierd.stores.factory import build_store

#: Seconds one check may take; a check still running then fails with a timeout.
CHECK_TIMEOUT = 15.0


async def _run_one(doctor: Doctor, item: Check) -> CheckResult:
    failed = [n for n in item.needs if not doctor.passed(n)]
    if failed:
        return CheckResult(
            item.name,
            False,
            f"not checked because the {', '.join(failed)} check failed",
            skipped=True,
        )
    try:
        return await asyncio.wait_for(item.func(doctor), doctor.timeout)
    except TimeoutError:
        return CheckResult(
            item.name,
            False,
            f"no answer within {doctor.timeout:g} s",
            "check the network, firewalls and the host, port or endpoint settings; a "
            "connection that hangs usually means packets are dropped on the way",
        )
    except GlacierdError as exc:  # a store, the catalog, the database, a setting, a Problem
        return CheckResult.failed(item.name, exc)
    except Exception as exc:
        return CheckResult(
            item.name,
            False,
            f"unexpected {exc.__class__.__name__}: {exc}",
            "run again with logging.level = 'debug' and report it as a glacierd bug",
        )


def _check_order(items: Sequence[Check]) -> None:
    """Dependencies must come first (so there are no cycles)."""
    names: set[str] = set()
    for item in items:
        later = [
            dep
            for dep in (*item.needs, *item.after)
            if dep not in names and any(other.name == dep for other in items)
        ]
        if later:
            raise ValueError(f"check {item.name!r} depends on {later[0]!r}, listed after it")
        names.add(item.name)


async def run_checks(
    config: Config,
    checks: Iterable[Check] | None = None,
    check_timeout: float = CHECK_TIMEOUT,
) -> list[CheckResult]:
    """Run the checks (every registered one by default); results in registry order."""
    items = list(CHECKS if checks is None else checks)
    _check_order(items)
    doctor = Doctor(config, build_store(config.store), check_timeout)
    tasks: dict[str, asyncio.Task[CheckResult]] = {}

    async def run(item: Check) -> CheckResult:
        for dep in (*item.needs, *item.after):
            if dep in tasks:
                await asyncio.wait([tasks[dep]])
        result = await _run_one(doctor, item)
        doctor.results[item.name] = result
        return result

    for item in items:
        tasks[item.name] = asyncio.create_task(run(item), name=f"doctor-{item.name}")
    try:
        await asyncio.gather(*tasks.values())
    finally:
        for task in tasks.values():
            task.cancel()
        # Closed even if open() got only half-way; closing a store never opened is harmless.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(doctor.store.close(), check_timeout)
    return [tasks[item.name].result() for item in items]


def render(results: list[CheckResult]) -> str:
    """The console: one line per check."""
    return "\n".join(r.line() for r in results)


def as_json(results: list[CheckResult]) -> dict[str, Any]:
    return {"ok": all(r.ok for r in results), "checks": [r.as_dict() for r in results]}
