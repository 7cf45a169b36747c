"""How far a backup is: what the CLI's progress line and the periodic log lines show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    backup_id: int
    stage: str = "starting"  # database | walking | files | done
    database_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    listeners: list[Callable[[Progress], None]] = field(default_factory=list)

    def changed(self) -> None:
        for listener in self.listeners:
            listener(self)
