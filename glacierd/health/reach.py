"""Whether the store answers: one cheap call (``Store.ping``), its answer reused for
``health.store_check_interval_seconds`` so that a monitoring system polling ``/health``
every few seconds does not turn into a stream of AWS requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

from glacierd.errors import GlacierdError
from glacierd.stores.base import Store

#: A store that has not answered within this long counts as unreachable.
PING_TIMEOUT = 10.0


@dataclass
class _Answer:
    at: datetime
    problem: str | None  # None: it answered


class _Reachability:
    def __init__(self) -> None:
        self.answer: _Answer | None = None
        self.lock = asyncio.Lock()


_BY_STORE: WeakKeyDictionary[Store, _Reachability] = WeakKeyDictionary()


async def store_problem(store: Store, now: datetime, interval_seconds: float) -> str | None:
    """Why the store cannot be reached (one sentence), or None; asks the store at most once
    per interval (concurrent callers share one call)."""
    state = _BY_STORE.setdefault(store, _Reachability())
    async with state.lock:
        answer = state.answer
        fresh = answer is not None and timedelta(0) <= now - answer.at < timedelta(
            seconds=interval_seconds
        )
        if answer is None or not fresh:
            answer = state.answer = _Answer(now, await _ask(store))
        return answer.problem


async def _ask(store: Store) -> str | None:
    try:
        await asyncio.wait_for(store.ping(), PING_TIMEOUT)
    except TimeoutError:
        return (
            f"{store.describe()} did not answer within {PING_TIMEOUT:g} s; check the network, "
            "firewalls and the store's endpoint settings."
        )
    except GlacierdError as exc:
        return str(exc)
    except Exception as exc:  # an unexpected answer is still "unreachable", not a crash
        return f"{store.describe()} could not be reached ({exc.__class__.__name__}: {exc})."
    return None
