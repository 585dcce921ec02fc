"""Every error spendwarden raises on purpose derives from SpendwardenError.

The CLI turns these into one-line messages; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SpendwardenError(Exception):
    """Base of all deliberate errors: the message is meant for a person."""


class ConfigError(SpendwardenError):
    """A settings value, flag or file is wrong; the message says which and what to do."""


class RejectedEvent(SpendwardenError):
    """An input record cannot be counted; it goes to the dead-letter topic with this reason.

    ``reason`` is a short machine-friendly code (``invalid``, ``decode``, ``too_large``,
    ``unpriced``, ``future``), ``detail`` the sentence a person can act on.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


class RuleFileError(SpendwardenError):
    """A rule file is invalid. Carries file, line and column so editors can jump there."""

    def __init__(self, path: str, line: int | None, column: int | None, message: str) -> None:
        where = path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.column = column
        self.message = message


class PricebookError(SpendwardenError):
    """A pricebook file is invalid (file and entry named in the message)."""
