"""From pydantic's validation errors to glacierd's sentences: every problem, in file order.

Each error names its setting by its dotted TOML name (``store.s3.bucket``). A misspelt key
or section gets a suggestion (difflib against the keys its section knows; else the section
where that key belongs), and a misspelt section's absence does not add errors of its own:
``[databse]`` is reported, the missing ``database.dsn`` it causes is not.

Input values are quoted only where they cannot be secret; a connection string never is.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from glacierd.config.errors import EXAMPLE_FILE, INVALID, MUST_BE, ConfigProblem
from glacierd.config.shape import Path_, all_settings, choices, fields, file_keys, label, model_at

# pydantic's type errors -> what the value must be.
_KINDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "path_type": "a string",
}
# pydantic's range errors -> (the bound's name in the error, how to say it).
_BOUNDS = {
    "greater_than": ("gt", "greater than {}"),
    "greater_than_equal": ("ge", "{} or more"),
    "less_than": ("lt", "less than {}"),
    "less_than_equal": ("le", "{} or less"),
}
_NOT_A_TABLE = {"dataclass_type", "dataclass_exact_type", "dataclass_args_type", "dict_type"}
_UNKNOWN_KEY = {"unexpected_keyword_argument", "extra_forbidden"}


def problems_of(exc: ValidationError, data: Mapping[str, Any]) -> list[ConfigProblem]:
    found: list[tuple[Path_, ConfigProblem]] = []
    caused_by_typos: set[Path_] = set()
    for error in exc.errors(include_url=False):
        loc = file_keys(tuple(str(part) for part in error["loc"]))
        if error["type"] in _UNKNOWN_KEY:
            problem, meant = _unknown_key(loc)
            if meant is not None and model_at(meant) is not None and not _present(meant, data):
                caused_by_typos.add(meant)
            found.append((loc, problem))
        else:
            found.append(_problem(error, loc))
    kept = [
        (path, problem)
        for path, problem in found
        if not any(path[: len(typo)] == typo for typo in caused_by_typos)
    ]
    kept.sort(key=lambda item: _position(item[0], data))  # stable: ties keep pydantic's order
    return [problem for _, problem in kept]


def _problem(error: ErrorDetails, loc: Path_) -> tuple[Path_, ConfigProblem]:
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == INVALID:
        path = (*loc, ctx["key"]) if ctx.get("key") else loc
        section = ".".join(path[:-1])

        def fill(text: str) -> str:
            return text.replace("{setting}", _name(path)).replace("{section}", section)

        return path, ConfigProblem(fill(ctx["detail"]), fill(ctx["fix"]), _name(path))
    setting = _name(loc)
    if kind == MUST_BE or kind in _KINDS:
        return loc, _must_be(setting, ctx.get("kind") or _KINDS[kind], ctx.get("got", got))
    if kind in _BOUNDS:
        name, phrase = _BOUNDS[kind]
        words = phrase.format("zero" if ctx[name] == 0 else ctx[name])
        return loc, ConfigProblem(
            f"{setting} is {got}",
            f"make it {words}",
            setting,
            f"{setting} must be {words}; got {got}.",
        )
    if kind == "literal_error":
        allowed = ", ".join(choices(loc)) or str(ctx.get("expected"))
        return loc, ConfigProblem(f"{setting} is {got!r}", f"use one of: {allowed}", setting)
    if kind in _NOT_A_TABLE:
        return loc, ConfigProblem(
            f"[{setting}] must be a table", f"write it as a [{setting}] section", setting
        )
    # Not expected from these models; pydantic's message, which never quotes the input.
    return loc, ConfigProblem(
        f"{setting or 'the configuration'} is not valid ({error['msg']})",
        f"correct it as {EXAMPLE_FILE} describes",
        setting or None,
    )


def _must_be(setting: str, kind: str, got: Any) -> ConfigProblem:
    """'api.port must be a whole number; got '80'.' — the wording these errors always had."""
    shown = ("true" if got else "false") if isinstance(got, bool) else repr(got)
    if isinstance(got, bool) and kind != "true or false":
        message = f"{setting} must be {kind}, not true/false."
    else:
        message = f"{setting} must be {kind}; got {got!r}."
    return ConfigProblem(f"{setting} is {shown}, not {kind}", f"write {kind}", setting, message)


def _unknown_key(loc: Path_) -> tuple[ConfigProblem, Path_ | None]:
    """The problem for a key no model knows, and the setting it probably meant."""
    parent, key = loc[:-1], loc[-1]
    model = model_at(parent)
    known = list(fields(model)) if model is not None else []
    # The right name in the wrong section ([store] bucket = … for [store.s3] bucket) first;
    # else the closest name that this section knows.
    hints = [path for path in all_settings() if path[-1] == key]
    if not hints:
        hints = [(*parent, close) for close in difflib.get_close_matches(key, known, n=1)]
    meant = hints[0] if len(hints) == 1 else None
    setting = _name(loc)
    detail = f"{setting} is not a known setting"
    if hints:
        detail += f" (did you mean {' or '.join(label(path) for path in hints)}?)"
    problem = ConfigProblem(detail, f"check its spelling against {EXAMPLE_FILE}", setting)
    return problem, meant


# ------------------------------------------------------------------------------- helpers


def _name(path: Path_) -> str:
    return ".".join(path)


def _present(path: Path_, data: Mapping[str, Any]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _position(path: Path_, data: Mapping[str, Any]) -> list[int]:
    """Where the setting is written in the file; one that is not written sorts after its
    section's written keys."""
    position: list[int] = []
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            break
        keys = list(node)
        position.append(keys.index(part) if part in node else len(keys))
        node = node.get(part)
    return position
