"""What a configuration error says: for each wrong setting, what is wrong and what to do.

Validators raise the pydantic errors made here (``invalid``, ``must_be``); the formatter
(``formatting.py``) turns them, and pydantic's own errors, into ``ConfigProblem``s. A
``ConfigError`` carries every problem found, so an operator fixes them in one round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_core import PydanticCustomError

from glacierd.errors import GlacierdError, sentence

EXAMPLE_FILE = "deploy/glacierd.example.toml"

# Error types of our own validators (pydantic's are named in formatting.py).
INVALID = "glacierd_invalid"
MUST_BE = "glacierd_must_be"


@dataclass(frozen=True)
class ConfigProblem:
    """One wrong setting: ``detail`` says what is wrong, ``fix`` what to do, ``setting`` is
    its dotted name (``store.s3.bucket``; None for the file itself). ``sentence`` is the
    message the CLI prints: normally the two joined, but a type or range error keeps its
    established wording ('api.port must be a whole number; got '80'.')."""

    detail: str
    fix: str | None = None
    setting: str | None = None
    sentence: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.sentence:
            object.__setattr__(self, "sentence", sentence(self.detail, self.fix))


class ConfigError(GlacierdError):
    """A setting is missing or wrong. ``str(exc)`` is one sentence an operator can act on
    (with several problems: a header line, then one sentence per line); ``detail`` and
    ``fix`` say what is wrong and what to do, and ``problems`` lists every problem, for
    renderers that lay them out themselves (the CLI, the control API, doctor)."""

    def __init__(
        self,
        detail: str,
        fix: str | None = None,
        *,
        setting: str | None = None,
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        self.problems = tuple(problems) or (ConfigProblem(detail, fix, setting),)
        if len(self.problems) == 1:
            message = self.problems[0].sentence
        else:
            message = "\n".join([f"{detail}:", *(f"  {p.sentence}" for p in self.problems)])
        super().__init__(detail, fix, message=message)

    @classmethod
    def of(cls, problems: Sequence[ConfigProblem], source: Path | None = None) -> ConfigError:
        """One error for all ``problems`` (at least one) found in ``source``."""
        if len(problems) == 1:
            only = problems[0]
            return cls(only.detail, only.fix, setting=only.setting, problems=problems)
        where = f"configuration file {source}" if source else "the configuration"
        return cls(
            f"{where} has {len(problems)} problems",
            "correct each one as its line says, then run glacierd check-config again",
            problems=problems,
        )


def invalid(detail: str, fix: str, *, key: str | None = None) -> PydanticCustomError:
    """A broken rule, raised inside a validator. In ``detail`` and ``fix``, '{setting}' stands
    for the setting's dotted name and '{section}' for its section's: a validator does not
    know where its model sits. A model-level check names its ``key``."""
    return PydanticCustomError(
        INVALID, "{detail}; {fix}", {"detail": detail, "fix": fix, "key": key}
    )


class Unquoted(str):
    """Shown as is where a value would be quoted: a description of a value that must not be
    shown (a list or table where a connection string belongs may hold a password)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def must_be(kind: str, got: object) -> PydanticCustomError:
    """The value has the wrong type or form; ``kind`` is what it must be ('an absolute path')."""
    return PydanticCustomError(MUST_BE, "must be {kind}", {"kind": kind, "got": got})
