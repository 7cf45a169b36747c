"""Turning exceptions into the one sentence an operator reads in logs, the API and the CLI."""

from __future__ import annotations

import asyncio

import asyncpg

from glacierd.catalog.pool import CatalogError
from glacierd.errors import GlacierdError
from glacierd.sources.database import DatabaseSourceError
from glacierd.stores.base import StoreError


class OperationError(GlacierdError):
    """An operation cannot go on: ``detail`` and ``fix`` are meant for the operator."""


EXPECTED = (OperationError, StoreError, DatabaseSourceError, CatalogError)


def describe_error(exc: BaseException, what: str) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return (
            f"interrupted: glacierd was stopped during the {what}; its partial data was "
            f"removed, start the {what} again."
        )
    if isinstance(exc, EXPECTED):
        return str(exc)
    if isinstance(exc, asyncpg.PostgresError):
        return f"the catalog database reported an error during the {what}: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or 'no file'}) during the {what}"
    return f"unexpected {exc.__class__.__name__} during the {what}: {exc}"
