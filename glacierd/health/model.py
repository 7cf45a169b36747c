"""A health evaluation's result: the problems found (one sentence each) and the facts shown
with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from glacierd.errors import sentence


@dataclass(frozen=True)
class Problem:
    """One reason glacierd is unhealthy: ``check`` names the check (``last_backup``,
    ``backup_age``, ``missed_run``, ``restore_stuck``, ``retrieval_overdue``, ``store``,
    ``disk``, ``catalog``), ``detail`` what is wrong, ``fix`` what to do."""

    check: str
    detail: str
    fix: str | None = None

    @property
    def message(self) -> str:
        return sentence(self.detail, self.fix)

    def as_json(self, details: bool = True) -> dict[str, Any]:
        if not details:
            return {"check": self.check}
        return {"check": self.check, "detail": self.detail, "fix": self.fix}


@dataclass
class Health:
    time: datetime
    problems: list[Problem] = field(default_factory=list)
    # What /health has always shown: the store, the last success, a running backup.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self, details: bool = True) -> dict[str, Any]:
        """The body of /health; without ``details`` only each problem's check is named."""
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "time": self.time.isoformat(),
            **self.facts,
            "problems": [p.as_json(details) for p in self.problems],
        }


def duration(seconds: float) -> str:
    """3725 -> '1 h 2 min'; 90 -> '1 min 30 s'; 2 days and more in days and hours."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
