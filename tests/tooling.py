"""External programs some tests run (promtool, Prometheus, Alertmanager, kubectl): one rule for all.

A program that is not installed skips its tests with the Debian package to install, unless the
environment variable naming it is ``1``: ``.ci/run`` installs the packages and sets those
variables, so there a missing program fails instead of hiding every test that needs it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def spendwarden_cli() -> str:
    """The ``spendwarden`` command of the running interpreter's environment (the venv's)."""
    found = Path(sys.executable).parent / "spendwarden"
    return str(found) if found.exists() else shutil.which("spendwarden") or "spendwarden"


def require_tool(name: str, require_env: str, package: str, *fallbacks: str) -> str:
    """The program's path (on PATH, else the first existing fallback path); fail or skip otherwise."""
    found = shutil.which(name) or next((path for path in fallbacks if Path(path).exists()), None)
    if found is not None:
        return found
    reason = f"{name} is not installed (Debian package {package})"
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason}, and {require_env}=1 requires it")
    pytest.skip(f"{reason}; {require_env}=1 turns this skip into a failure")
