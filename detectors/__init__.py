"""Online anomaly detectors, river style; a high score means anomalous.

Each detector holds its parameters and the state of one series (one scope):

- ``learn_one(x, t)`` folds in one observation at event time ``t`` (UTC epoch seconds); a time
  at or before the last one learned is ignored, so a redelivery is not counted twice;
- ``score_one(x, t) -> Score`` says how unusual ``x`` is (value, expected, band, severity,
  reasons, warm) without changing state;
- ``to_state()`` / ``from_state(state)`` move the series' state in and out of the engine's
  mapping as JSON values, at most ``state_bound`` bytes each.

Nothing here does I/O or reads the clock; streams/anomaly.py feeds them from the engine.
docs/detectors.md has the method of each detector, its parameters and what is not built yet.
"""

from spendwarden.detectors.base import SEVERITIES, Detector, Score, Severity, State
from spendwarden.detectors.cache import CacheCollapse
from spendwarden.detectors.exceptions import DetectorParameterError, DetectorStateError
from spendwarden.detectors.new_model import NewModel
from spendwarden.detectors.profile import TokenProfile
from spendwarden.detectors.seasonal import SeasonalBaseline
from spendwarden.detectors.tokens import TokenDrift
from spendwarden.detectors.unit_cost import UnitCostDrift

DETECTORS: dict[str, type[Detector]] = {
    cls.kind: cls for cls in (SeasonalBaseline, UnitCostDrift, TokenDrift, TokenProfile, NewModel, CacheCollapse)}
# The detectors rules read, by the name they read them under (``anomaly.<name>.score``) and
# configure them under (``detectors: {<name>: {...}}``): the one list the compiler, the
# engine's feed and the evaluation take them from.
RULE_DETECTORS: dict[str, type[Detector]] = {
    "spend": SeasonalBaseline, "unit_cost": UnitCostDrift, "tokens": TokenDrift, "profile": TokenProfile,
    "new_model": NewModel, "cache": CacheCollapse,
}

__all__ = [
    "DETECTORS", "RULE_DETECTORS", "SEVERITIES", "CacheCollapse", "Detector", "DetectorParameterError",
    "DetectorStateError", "NewModel", "Score",
    "SeasonalBaseline", "Severity", "State", "TokenDrift", "TokenProfile", "UnitCostDrift",
]
