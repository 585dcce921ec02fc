"""docs/settings.md documents every setting, with a description."""

from __future__ import annotations

from pathlib import Path

from spendwarden.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_every_setting_has_a_documented_row() -> None:
    rows = {line.split("|")[1].strip(" `"): line.split("|")[4].strip()
            for line in DOC.read_text().splitlines() if line.startswith("| `SPENDWARDEN_")}
    for name in Settings.model_fields:
        env = f"SPENDWARDEN_{name.upper()}"
        assert env in rows, f"{env} missing from docs/settings.md"
        assert rows[env], f"{env} has no description in docs/settings.md"
    assert set(rows) == {f"SPENDWARDEN_{name.upper()}" for name in Settings.model_fields}
