"""What a doctor check is, what it answers, and what the checks share while they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from glacierd.config import Config
from glacierd.errors import GlacierdError
from glacierd.sources.database import ToolVersion
from glacierd.stores.base import Store


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: Not (fully) run because a check it depends on failed; never ok.
    skipped: bool = False

    @property
    def label(self) -> str:
        return "OK" if self.ok else "SKIP" if self.skipped else "FAIL"

    def line(self) -> str:
        """The console line: 'FAIL  name: detail — fix'."""
        text = f"{self.label:<6}{self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" — {self.fix}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failed(cls, name: str, error: GlacierdError) -> CheckResult:
        """A check that found ``error``: its detail and fix, as they are."""
        return cls(name, False, error.detail.removesuffix("."), error.fix)


class Problem(GlacierdError):
    """Raised by a check: what is wrong (``detail``) and what to do about it (``fix``)."""


@dataclass
class Doctor:
    """What the checks share: the configuration, the store (built, opened by the store
    credentials check) and what earlier checks found."""

    config: Config
    store: Store
    timeout: float
    results: dict[str, CheckResult] = field(default_factory=dict)
    server: ToolVersion | None = None
    last_dump_size: int | None = None
    last_dump_backup: int | None = None

    def passed(self, name: str) -> bool:
        result = self.results.get(name)
        return result is not None and result.ok


CheckFunc = Callable[[Doctor], Awaitable[CheckResult]]


@dataclass(frozen=True)
class Check:
    """A named check; ``needs`` must pass for it to run, ``after`` only run before it (it may
    use what they found, or degrade when they failed)."""

    name: str
    func: CheckFunc
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
