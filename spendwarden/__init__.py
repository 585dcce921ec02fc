"""spendwarden: watches AI spend as it happens and stops it from running away.

The code lives in the card's folders, mapped into this namespace by pyproject.toml:
``spendwarden.streams`` (events, ingest, engine), ``spendwarden.rules`` (rule files),
``spendwarden.detectors`` (anomaly models) and ``spendwarden.replay`` (history at CPU speed).
"""

__version__ = "0.1.0"
