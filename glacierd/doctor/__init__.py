"""``glacierd doctor``: check everything a backup and a restore depend on, and say how to fix it.

    registry.py   every check, in report order, with what each needs
    runner.py     runs them (bounded, concurrent where independent); console and JSON output
    model.py      CheckResult, Check, Problem, and the Doctor the checks share
    database.py   the backed-up database, the catalog, pg_dump / pg_restore / psql
    store.py      the store's credentials and a probe, in the store's own words
    host.py       configuration and log file, disk space, attached files and orphans
    sns.py        the SNS endpoint's topics and port

A failed check shows what is wrong and how to fix it ('FAIL  store: … — create it …'), from
the ``detail`` and ``fix`` of the error it met. Doctor changes nothing it does not put back:
it creates no catalog schema, and the only thing it writes is the store's probe object,
deleted at once (opening a local store creates its directory, as the daemon would).
"""

from glacierd.doctor.model import Check, CheckResult, Doctor, Problem
from glacierd.doctor.registry import CHECKS
from glacierd.doctor.runner import CHECK_TIMEOUT, as_json, render, run_checks

__all__ = [
    "CHECKS",
    "CHECK_TIMEOUT",
    "Check",
    "CheckResult",
    "Doctor",
    "Problem",
    "as_json",
    "render",
    "run_checks",
]
