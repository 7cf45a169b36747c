"""The backup verb: one database dump plus every attached file not archived before.

Called alike by the scheduler, ``POST /backups`` and ``glacierd backup``. ``start_backup``
takes the operation lock and records the backup (so the caller gets its id at once); the
returned task does the work and releases the lock when it ends, however it ends.

A backup is recorded ``completed`` only after its database archive and every file archive
it references are stored; any failure, cancellation included, records it ``failed`` with
the reason, and removes what only it uploaded: its dump and unfinished uploads. File
archives that were fully stored are kept for the next backup to adopt, so a file is still
archived exactly once.

One attempt, one key: every object this backup uploads has a key no other backup uses
(``files/<path>@backup<id>``, ``database/<time>-backup<id>.dump``), and each finished upload
is recorded as stored as soon as it completes. Cleaning up after a failed backup therefore
deletes only its own attempts, never an object a stored archive uses.

The rooms: run.py (starting, running and failing a backup; the database dump), files.py
(the attached files: one walk, one set difference, the uploads), cleanup.py (removing what
only a failed backup uploaded), progress.py (what the CLI and the log lines show).
"""

from glacierd.operations.backup.cleanup import remove_unfinished
from glacierd.operations.backup.files import attempt_key
from glacierd.operations.backup.run import BackupHandle, Progress, run_backup, start_backup

__all__ = [
    "BackupHandle",
    "Progress",
    "attempt_key",
    "remove_unfinished",
    "run_backup",
    "start_backup",
]
