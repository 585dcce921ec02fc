"""The commit cadence settings reach Faust: they decide how often state is checkpointed
(docs/service.md), so a setting that silently stayed at Faust's default would multiply the
changelog records per event."""

from __future__ import annotations

import faust
import pytest

from spendwarden.settings import Settings
from spendwarden.streams.service import faust_app_settings


def _app_conf(settings: Settings) -> faust.Settings:
    app = faust.App(settings.app_id, **faust_app_settings(settings))
    return app.conf


def test_defaults_commit_every_five_seconds_or_fifty_thousand_records(tmp_path) -> None:
    conf = _app_conf(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))
    assert conf.broker_commit_interval == pytest.approx(5.0)
    assert conf.broker_commit_every == 50_000


def test_settings_from_the_environment_reach_the_app(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWARDEN_COMMIT_INTERVAL_S", "0.5")
    monkeypatch.setenv("SPENDWARDEN_COMMIT_EVERY", "1234")
    conf = _app_conf(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))
    assert conf.broker_commit_interval == pytest.approx(0.5)
    assert conf.broker_commit_every == 1234


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="commit_interval_s"):
        Settings(kafka_bootstrap="127.0.0.1:9", commit_interval_s=0)
