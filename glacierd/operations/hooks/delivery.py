"""Delivering one event to one hook."""

from __future__ import annotations

from prometheus_client import Counter

#: Process-local: attempts since this process started, by hook and outcome (sent, failed).
HOOK_DELIVERIES = Counter(
    "glacierd_hook_deliveries",
    "Hook delivery attempts by this process, by hook and outcome.",
    ["hook", "outcome"],
    registry=None,
)
