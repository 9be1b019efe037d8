"""Reading the user's files: one-line errors that name the file (and line) instead of tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError


def read_text(path: str | Path, what: str) -> str:
    """The file's text; an unreadable file is ``<path>: cannot read <what> (<reason>)``."""
    p = Path(path)
    try:
        return p.read_text()
    except OSError as exc:
        raise UserError(f"{p}: cannot read {what} ({exc.strerror or exc})") from None


def load_yaml(text: str, where: str, *, all_documents: bool = False) -> Any:
    """Parse YAML; a syntax error is ``<where>: malformed YAML at line L, column C: <problem>``."""
    import yaml

    try:
        if all_documents:
            return [d for d in yaml.safe_load_all(text) if d is not None]
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None
