"""Every check ``glacierd doctor`` runs, in the order they are reported.

Like barman's ``check``: a list of small named checks, each answering a ``CheckResult``.
``needs`` names checks that must pass for a check to run at all; ``after`` names checks
whose findings it uses (the server's version, the newest dump's size) if they are there.
"""

from __future__ import annotations

from glacierd.doctor.database import (
    check_catalog,
    check_database,
    check_pg_dump_tool,
    check_pg_restore_tool,
    check_psql_tool,
)
from glacierd.doctor.host import check_configuration, check_disk_space, check_files
from glacierd.doctor.model import Check
from glacierd.doctor.sns import check_sns
from glacierd.doctor.store import check_store, check_store_credentials

CHECKS: list[Check] = [
    Check("configuration", check_configuration),
    Check("database", check_database),
    Check("catalog", check_catalog),
    Check("pg_dump", check_pg_dump_tool, after=("database",)),
    Check("pg_restore", check_pg_restore_tool, after=("database",)),
    Check("psql", check_psql_tool, after=("database",)),
    Check("store credentials", check_store_credentials),
    Check("store", check_store, needs=("store credentials",)),
    Check("disk space", check_disk_space, after=("catalog",)),
    Check("files", check_files),
    Check("sns", check_sns),
]
