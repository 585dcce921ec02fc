"""structlog setup: key=value on a terminal, JSON otherwise, secrets masked on the way out.

Secrets reach the process through settings (env or files) and must never be printed: the
``mask_secrets`` step replaces any value whose key looks secret, and any registered secret
value found inside a message, with ``***``.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, MutableMapping

import structlog

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api[_-]?key|webhook|authorization|credential)", re.I)
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it appears in a log line."""
    if value and len(value) >= 4:
        _registered.add(value)


def _scrub(text: str) -> str:
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def mask_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and registered secret values."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEY.search(key) and value not in (None, ""):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
        elif _registered and not isinstance(value, (int, float, bool)):
            event_dict[key] = _scrub(repr(value)) if _scrub(repr(value)) != repr(value) else value
    return event_dict


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once per process; ``json`` defaults to 'not a terminal'."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
