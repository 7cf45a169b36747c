"""Syslog priorities for journald: ``journalctl -p err -u glacierd`` finds the failures.

Under systemd, a service's stderr is a stream to the journal, and systemd names that stream
in ``JOURNAL_STREAM`` (``device:inode``). journald reads a ``<N>`` prefix at the start of each
line as that line's syslog priority (sd-daemon(3); ``SyslogLevelPrefix=`` is on by default)
and strips it. Without the prefix every line is stored at the unit's default, info.

The prefix is added only when stderr *is* that stream (its device and inode match): a
command run by hand, or with stderr redirected to a file inside a unit, writes plain lines.
Every line of a multi-line entry (a console traceback) carries the prefix, so no part of an
error is filed as info.
"""

from __future__ import annotations

import logging
import os
from typing import TextIO

#: logging levels to syslog priorities (sd-daemon.h: SD_CRIT 2, SD_ERR 3, SD_WARNING 4,
#: SD_INFO 6, SD_DEBUG 7).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


def is_journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM``)."""
    named = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = named.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class PriorityPrefix(logging.Formatter):
    """Wraps a formatter: every line it writes starts with ``<N>``, N the record's priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))
