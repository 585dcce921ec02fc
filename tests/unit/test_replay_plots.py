"""The report's plots: spend per scope and hour from the replayed events, a seasonal band, PNGs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from spendwarden.replay.evaluation import Episode, Labels, LabelWindow
from spendwarden.replay.plots import HourlySpend, with_band, write_plots

H = 3600
T0 = 1_764_547_200  # 2025-12-01 00:00 UTC


class FakeIngest:
    """Returns the priced events it was built with (pure logic under test: the tap's sums)."""

    def __init__(self, events: list[SimpleNamespace]) -> None:
        self.events = events

    def parse_record(self, raw: bytes) -> tuple[list[SimpleNamespace], list[str]]:
        return self.events, ["rejected-reason"]

    def parse_object(self, record: dict[str, str]) -> tuple[list[SimpleNamespace], list[str]]:
        return self.events, []


def priced(tenant: str, use_case: str, ts: float, nanos: int) -> SimpleNamespace:
    return SimpleNamespace(event=SimpleNamespace(tenant_id=tenant, use_case_id=use_case), ts=ts, cost_nanos=nanos)


def test_the_tap_sums_cost_per_scope_and_hour_and_passes_everything_on() -> None:
    events = [priced("acme", "cs", T0 + 10, 5), priced("acme", "cs", T0 + 20, 7), priced("acme", "cs", T0 + H, 1),
              priced("acme", "draft", T0, 2)]
    tap = HourlySpend(FakeIngest(events))
    assert tap.parse_record(b"x") == (events, ["rejected-reason"])
    tap.parse_object({})
    hour = T0 // H
    assert tap.hours == {("acme", "cs"): {hour: 24, hour + 1: 2}, ("acme", "draft"): {hour: 4}}


def test_the_band_follows_the_daily_cycle_once_learned() -> None:
    series = {T0 // H + h: (20 if 9 <= h % 24 < 18 else 4) * 10**9 for h in range(10 * 24)}
    rows = with_band(series, T0 // H, T0 // H + 10 * 24 - 1)
    assert rows[0].band is None  # nothing learned yet
    busy, quiet = rows[9 * 24 + 12], rows[9 * 24 + 3]
    assert busy.band is not None and busy.band[0] < 20 < busy.band[1]
    assert quiet.band is not None and quiet.band[1] < 20


def test_a_plot_per_window_and_false_alert(tmp_path: Path) -> None:
    hour0 = T0 // H
    tap = HourlySpend(FakeIngest([]))
    tap.hours[("acme", "cs")] = {hour0 + h: 10**9 * (30 if h == 100 else 2) for h in range(7 * 24)}
    window = LabelWindow("agent-loop-01", "agent-loop", {"tenant_id": "acme", "use_case_id": "cs"},
                         T0 + 100 * H, T0 + 100 * H + 1800, True)
    labels = Labels("crafted", 1, T0, T0 + 7 * 24 * H, T0 + 2 * 24 * H, 1, (window,))
    hit = Episode("loop", "profile", {"tenant_id": "acme", "use_case_id": "cs"}, T0 + 100 * H + 300, T0 + 101 * H)
    false = Episode("loop", "profile", {"tenant_id": "acme", "use_case_id": "other"}, T0 + 50 * H, T0 + 51 * H)
    plots = write_plots(tmp_path / "plots", labels, [hit, false], tap, [false])
    assert [p.file.split("-2025")[0] for p in plots] == ["window-acme-cs", "false-acme-other"]
    assert "1 alert episode(s)" in plots[0].title and "agent-loop" in plots[0].title
    for plot in plots:
        data = (tmp_path / "plots" / plot.file).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_without_matplotlib_the_report_says_how_to_get_plots(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    from spendwarden.replay.report import plots_section

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    labels = Labels("crafted", 1, T0, T0 + 2 * H, T0, 1, ())
    assert write_plots(tmp_path / "plots", labels, [], HourlySpend(FakeIngest([])), []) == []
    assert not (tmp_path / "plots").exists()
    assert "pip install 'spendwarden[report]'" in "\n".join(plots_section([]))


def test_a_window_outside_the_replayed_data_gets_no_plot_and_no_error(tmp_path: Path) -> None:
    tap = HourlySpend(FakeIngest([]))
    tap.hours[("acme", "cs")] = {T0 // H: 10**9}
    late = LabelWindow("surge-01", "surge", {"tenant_id": "acme", "use_case_id": "cs"},
                       T0 + 30 * 24 * H, T0 + 31 * 24 * H, False)
    labels = Labels("crafted", 1, T0, T0 + 2 * 24 * H, T0, 1, (late,))
    assert write_plots(tmp_path / "plots", labels, [], tap, []) == []
