"""Hooks: a webhook and a command told, once each, when a backup or restore ends.

The catalog records every end of a backup or restore as an event (a trigger, migration
0008), in the same transaction as the state change: nothing that ends can go unrecorded,
whoever ended it (the daemon, ``glacierd backup``, a crash recovery). The daemon's
dispatcher turns each new event into one delivery per configured hook that wants it
(failures always, successes with ``hooks.on_success``), then delivers: a webhook POST with
the event as JSON, or the command with the event on its stdin. A delivery is recorded as
sent, or retried later (``hooks.retry_seconds``, doubling) up to ``hooks.max_attempts``
times, and survives restarts — so each hook gets each event once. (A crash in the instant
between a hook's answer and its recording sends it again, with the same event id, which
the receiver can use to drop the duplicate.) A hook that fails never touches a backup: it
runs apart from the work, after the fact.

    delivery.py     the webhook POST and the command run, each bounded in time
    dispatcher.py   new events to deliveries, due deliveries to hooks, the daemon's loop
"""

from glacierd.operations.hooks.delivery import HOOK_DELIVERIES
from glacierd.operations.hooks.dispatcher import HookDispatcher

__all__ = ["HOOK_DELIVERIES", "HookDispatcher"]
