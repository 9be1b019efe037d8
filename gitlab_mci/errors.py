"""The one exception type users see: a problem they can fix, said in one line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment, reported as one line without a traceback.

    The message names the file, field, flag or variable at fault and, where it helps, what would fix it.
    Raised before any change is made whenever the problem can be known in advance.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line message would break GitLab's log folding and `--output json`.
        super().__init__(" ".join(message.split()))
