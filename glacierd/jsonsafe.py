"""JSON from strangers, parsed with a depth limit.

``json.loads`` recurses once per nesting level: 60,000 ``[`` in a 60 KB body raise
RecursionError deep inside the parser (an internal error, not a bad request). Every body
glacierd accepts is shallow (the control API's objects are flat, an SNS envelope is one
level, an S3 event or a Glacier job message a handful), so the nesting is measured first,
in one linear pass, and anything deeper than ``MAX_DEPTH`` is refused before parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32

# A complete JSON string (escapes included); brackets inside strings do not nest anything.
# (Possessive quantifiers: linear time, no backtracking on an unterminated string.)
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def nesting_depth(raw: bytes, limit: int) -> int:
    """The deepest nesting of ``raw`` (stops counting once past ``limit``)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``JsonTooDeep`` (a ValueError) for documents nested deeper
    than ``max_depth``; otherwise it raises what ``json.loads`` raises."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nesting_depth(data, max_depth) > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(raw)
