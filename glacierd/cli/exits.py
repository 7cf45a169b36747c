"""The exit codes of every ``glacierd`` command, in one place.

Each command's ``--help`` lists the ones it uses, with these meanings; the README's
"Command line" section has the same table. A script can tell "try again later" (3, 5) from
"wrong id" (4) from "broken" (1, 2).
"""

from __future__ import annotations

OK = 0
#: The operation failed: the store or the database refused, a restore ended failed, a
#: doctor check failed, the daemon answered an error not listed below.
FAILED = 1
#: Wrong arguments or configuration (argparse's own usage errors are 2 as well): fix the
#: command line or the file; trying again unchanged cannot help.
USAGE = 2
#: Busy or in the wrong state for it now: another backup or restore holds the lock, the
#: backup is still running or being restored (HTTP 409). Try again later.
BUSY = 3
#: No such backup, restore or snapshot (HTTP 404).
NOT_FOUND = 4
#: The daemon is not running or not reachable, is stopping (HTTP 503), or refused this
#: client's token (HTTP 401/403).
UNAVAILABLE = 5
#: Interrupted with Ctrl-C.
INTERRUPTED = 130

MEANING: dict[int, str] = {
    OK: "success",
    FAILED: "the operation failed (the message says why)",
    USAGE: "wrong arguments or configuration",
    BUSY: "busy: another backup or restore runs, or the backup's state forbids it now",
    NOT_FOUND: "no such backup, restore or snapshot",
    UNAVAILABLE: "the daemon is not reachable, is stopping, or refused the token",
    INTERRUPTED: "interrupted (Ctrl-C)",
}

#: What a command that talks to the daemon can end with.
API_COMMAND = (OK, FAILED, USAGE, BUSY, NOT_FOUND, UNAVAILABLE, INTERRUPTED)
#: What a command that works on the catalog and the store directly can end with.
LOCAL_COMMAND = (OK, FAILED, USAGE, INTERRUPTED)


def for_http_status(status: int) -> int:
    """The exit code for an error answer of the control API."""
    if status == 404:
        return NOT_FOUND
    if status == 409:
        return BUSY
    if status in (401, 403, 503):
        return UNAVAILABLE
    if status == 400:
        return USAGE
    return FAILED
