"""Why a restore request stops."""

from __future__ import annotations

from glacierd.operations.errors import OperationError


class RestoreFailed(OperationError):
    """The request cannot complete; nothing was changed (the message says why)."""


class RequestMoved(Exception):
    """The request is no longer in the state this driver saw (nothing to do here)."""
