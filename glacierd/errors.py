"""The one shape of an error an operator reads: what is wrong, and what to do about it.

Every error glacierd expects (a store, the catalog, the backed-up database, an operation,
the configuration) is a ``GlacierdError``: ``detail`` says what is wrong, ``fix`` what to do
(None when the detail says it all), and ``str()`` is the one sentence joining them —
'what is wrong; what to do.' Renderers take the fields, never the sentence apart: the CLI
prints the sentence, the control API adds ``detail`` and ``fix`` to its JSON error, and
``glacierd doctor`` prints 'detail — fix'.

This module imports nothing from glacierd, so every layer can use it.
"""

from __future__ import annotations


def sentence(detail: str, fix: str | None) -> str:
    """glacierd's message form: 'what is wrong; what to do.' (ends with a full stop)."""
    text = f"{detail}; {fix}" if fix else detail
    return text if text.endswith((".", "?", "!")) else text + "."


class GlacierdError(Exception):
    """An error meant for the operator, as ``detail`` (what is wrong) and ``fix`` (what to do).

    ``str()`` is ``sentence(detail, fix)``; with no fix it is ``detail`` exactly as given
    (a sentence written whole, which may already name the fix). ``message`` replaces the
    sentence where a subclass lays out more (several configuration problems, one a line).
    """

    def __init__(self, detail: str, fix: str | None = None, *, message: str | None = None) -> None:
        if message is None:
            message = sentence(detail, fix) if fix else detail
        super().__init__(message)
        self.detail = detail
        self.fix = fix

    def fields(self) -> dict[str, str | None]:
        """``detail`` and ``fix`` for a JSON body (the API's error, doctor's ``--json``)."""
        return {"detail": self.detail.removesuffix("."), "fix": self.fix}


__all__ = ["GlacierdError", "sentence"]
