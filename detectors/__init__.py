"""Online anomaly detectors (river style: ``learn_one`` / ``score_one``); a high score means anomalous.

Not built yet: see issue "Online anomaly detectors". Nothing here is imported by the engine.
"""
