"""Errors the detectors raise on purpose; all derive from SpendwardenError (and ValueError)."""

from __future__ import annotations

from spendwarden.exceptions import ConfigError, SpendwardenError


class DetectorParameterError(ConfigError, ValueError):
    """A detector parameter is out of range; the message names it and the constraint."""


class DetectorStateError(SpendwardenError, ValueError):
    """A per-series state from the store is not one this detector wrote (wrong kind or version)."""
