"""The restore verb: a persisted request that drives itself to the end.

    requested → retrieving → fetching → restoring → restored   (or failed, with the reason)

``RestoreDriver.advance`` looks at a request and moves it as far as it can now; it is
called after the request is made, after every poll/notification tick, and at start-up, so
a restart (SIGKILL included) resumes where the catalog says the request is. Each step is
safe to repeat, and what must happen once — the safety snapshot — is recorded in
``steps`` before the step that depends on it.

Nothing changes before every needed archive is local and its SHA-256 verified again from
disk. Inside "restoring", under the operation lock shared with backups:

1. a safety snapshot of the current database (unless restore.snapshot = false);
2. files are made to match the backup: missing ones put back, changed ones moved to the
   orphan folder and replaced (placement.py, which records what it changes);
3. the database is restored in one transaction (sources/database_restore.py);
4. files the restored backup does not reference are moved to the orphan folder.

If step 2 or 3 fails, step 2 is taken back exactly (only files this restore wrote are
removed, replaced ones come back), so the request ends failed with the database and the
files as they were.

The rooms: plan.py (the dry run, and the checks before a request is accepted), driver.py
(the states and their steps), restoring.py (the one step that changes anything), views.py
(what the API shows), snapshot.py (safety snapshots), and for the files paths.py,
placed.py, placement.py and moving.py.
"""

from glacierd.operations.restore.driver import RestoreDriver
from glacierd.operations.restore.errors import RestoreFailed
from glacierd.operations.restore.plan import start_restore, start_snapshot_restore
from glacierd.operations.restore.views import list_restores, restore_view

__all__ = [
    "RestoreDriver",
    "RestoreFailed",
    "list_restores",
    "restore_view",
    "start_restore",
    "start_snapshot_restore",
]
