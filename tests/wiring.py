"""The daemon's workers for tests that run operations in-process: wired by
``service.wire_workers`` exactly as ``glacierd serve`` wires them.

``wired(ctx)`` builds them for a context and closes them afterwards (no new downloads;
the caller lets running work finish), ``wire(ctx)`` only builds them; ``workers_of(ctx)``
finds them again, so that a helper such as ``drive(ctx, restore_id)`` needs only the
context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from glacierd.context import Context
from glacierd.operations.retrieval import OnReady, no_follow_up
from glacierd.service import Workers, wire_workers

_WIRED: dict[int, Workers] = {}


async def no_pause() -> None:
    """The restore kick's pause in tests: a burst of kicks within one step of the event
    loop still coalesces; nothing waits on a clock."""
    await asyncio.sleep(0)


def wire(ctx: Context) -> Workers:
    workers = wire_workers(ctx, settle=no_pause)
    _WIRED[id(ctx)] = workers
    return workers


@contextmanager
def wired(ctx: Context) -> Iterator[Workers]:
    workers = wire(ctx)
    try:
        yield workers
    finally:
        workers.close()
        _WIRED.pop(id(ctx), None)


def workers_of(ctx: Context) -> Workers:
    return _WIRED[id(ctx)]


def on_ready_of(ctx: Context) -> OnReady:
    """What the daemon passes as ``on_ready``: its fetcher's enqueue (nothing if not wired)."""
    workers = _WIRED.get(id(ctx))
    return workers.fetcher.enqueue if workers is not None else no_follow_up
