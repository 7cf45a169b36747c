"""Checks of the store: each store says in its own words what it found (``Store.describe``,
``check_access``, ``probe``), so nothing here knows S3 or vaults."""

from __future__ import annotations

from glacierd.doctor.model import CheckResult, Doctor


async def check_store_credentials(d: Doctor) -> CheckResult:
    await d.store.open()  # closed by run_checks, even if it gets only half-way
    return CheckResult("store credentials", True, await d.store.check_access())


async def check_store(d: Doctor) -> CheckResult:
    # The only thing doctor writes: a probe object, deleted at once (or, where a read back
    # would take hours, the store only answers; the store decides and says which).
    return CheckResult("store", True, await d.store.probe())
