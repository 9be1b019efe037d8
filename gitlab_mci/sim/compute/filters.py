"""The ``filter`` expressions of Compute ``list`` calls that gcloud and gitlab-mci send.

Supported: ``field = value``, ``field != value`` (exact), ``field eq regex``, ``field ne regex`` (full match),
comparisons joined by ``AND`` (or juxtaposed parenthesised terms) and ``OR``; ``labels.key`` and nested fields.
Anything else is a 400, never silently ignored.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    pass


def _field(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _comparison(field: str, op: str, value: str) -> Predicate:
    if op in ("=", "!=", ":"):
        def exact(obj: dict[str, Any]) -> bool:
            actual = _field(obj, field)
            hit = str(actual) == value if not isinstance(actual, bool) else str(actual).lower() == value.lower()
            return hit if op != "!=" else not hit
        return exact
    try:
        rx = re.compile(value)
    except re.error as exc:
        raise FilterError(f"invalid regular expression {value!r}: {exc}") from None

    def regex(obj: dict[str, Any]) -> bool:
        actual = _field(obj, field)
        hit = actual is not None and rx.fullmatch(str(actual)) is not None
        return hit if op == "eq" else not hit
    return regex


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="()=!:")
    lexer.whitespace_split = True
    lexer.escape = ""  # regexes keep their backslashes
    lexer.wordchars += ".-_*/\\[]^$+?{}|,@"
    try:
        return list(lexer)
    except ValueError as exc:
        raise FilterError(str(exc)) from None


def compile_filter(text: str) -> Predicate:
    """Compile a filter expression; the empty filter matches everything."""
    if not text.strip():
        return lambda obj: True
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise FilterError("unexpected end of filter")
        pos += 1
        return tokens[pos - 1]

    def term() -> Predicate:
        tok = take()
        if tok == "(":
            inner = disjunction()
            if take() != ")":
                raise FilterError("missing ')'")
            return inner
        if tok.upper() == "NOT":
            negated = term()
            return lambda obj: not negated(obj)
        op = take()
        if op == "!":
            if take() != "=":
                raise FilterError("expected '!='")
            op = "!="
        if op not in ("=", "!=", "eq", "ne", ":"):
            raise FilterError(f"unsupported operator {op!r}")
        return _comparison(tok, op, take())

    def conjunction() -> Predicate:
        parts = [term()]
        while peek() is not None and peek() != ")" and str(peek()).upper() != "OR":
            if str(peek()).upper() == "AND":
                take()
            parts.append(term())
        return lambda obj: all(p(obj) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while peek() is not None and str(peek()).upper() == "OR":
            take()
            parts.append(conjunction())
        return lambda obj: any(p(obj) for p in parts)

    result = disjunction()
    if pos != len(tokens):
        raise FilterError(f"unexpected {tokens[pos]!r}")
    return result
