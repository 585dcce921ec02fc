"""The one rule for external programs (tests/tooling.py): found, skipped, or failed when required."""

from __future__ import annotations

import sys

import pytest

from tooling import require_tool

MISSING = "spendwarden-no-such-program"


def test_a_program_on_path_or_at_a_fallback_is_found() -> None:
    assert require_tool("sh", "SPENDWARDEN_TEST_REQUIRE_X", "dash").endswith("/sh")
    assert require_tool(MISSING, "SPENDWARDEN_TEST_REQUIRE_X", "none", sys.executable) == sys.executable


def test_a_missing_program_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPENDWARDEN_TEST_REQUIRE_X", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_tool(MISSING, "SPENDWARDEN_TEST_REQUIRE_X", "none")
    assert str(skipped.value) == (f"{MISSING} is not installed (Debian package none); "
                                  "SPENDWARDEN_TEST_REQUIRE_X=1 turns this skip into a failure")
    monkeypatch.setenv("SPENDWARDEN_TEST_REQUIRE_X", "0")  # only 1 requires it
    with pytest.raises(pytest.skip.Exception):
        require_tool(MISSING, "SPENDWARDEN_TEST_REQUIRE_X", "none")
    monkeypatch.setenv("SPENDWARDEN_TEST_REQUIRE_X", "1")
    with pytest.raises(pytest.fail.Exception, match="SPENDWARDEN_TEST_REQUIRE_X=1 requires it"):
        require_tool(MISSING, "SPENDWARDEN_TEST_REQUIRE_X", "none")
