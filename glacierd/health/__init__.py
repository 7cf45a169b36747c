"""Is glacierd healthy? One evaluation, used by ``GET /health`` and ``glacierd check``.

Unhealthy when: the last backup failed; the last success is older than
``health.max_backup_age_hours``; a scheduled backup was missed; a restore has been running
longer than its slowest retrieval plus ``health.restore_grace_hours``; a retrieval has been
pending longer than its tier's maximum (plus one poll); the store does not answer (a cheap
check, its answer reused for ``health.store_check_interval_seconds``); or state_dir has less
room than the newest database dump needs.

Everything is read from the catalog and the store, so the evaluation works as well in the
daemon as in a one-shot ``glacierd check`` while the daemon is down.

    model.py     Problem and Health, and how they are shown
    checks.py    the checks, each returning the problems it found
    reach.py     the store's reachability, checked at most once per interval
    command.py   ``glacierd check``
"""

from glacierd.health.checks import evaluate
from glacierd.health.model import Health, Problem

__all__ = ["Health", "Problem", "evaluate"]
