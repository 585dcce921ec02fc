"""``--compare OLD NEW``: the alerts one rule set raises on the same events and the other does not.

Why by episode rather than by effect: a rule change mostly moves *when* an alert fires or how
long it lasts, and a reader wants "this alert is new / gone", not every firing and resolution
that shifted. Two episodes are the same alert when rule, scope and firing minute agree. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from spendwarden.replay.evaluation import Episode

Key = tuple[str, tuple[tuple[str, str], ...], int]


def key(episode: Episode) -> Key:
    """Rule, scope and firing minute: what makes two episodes the same alert."""
    return episode.rule, tuple(sorted(episode.scope.items())), int(episode.start // 60)


def diff(old: Sequence[Episode], new: Sequence[Episode]) -> tuple[list[Episode], list[Episode]]:
    """(appeared: in ``new`` only, vanished: in ``old`` only), each in firing order."""
    old_keys = {key(e) for e in old}
    new_keys = {key(e) for e in new}
    appeared = [e for e in new if key(e) not in old_keys]
    vanished = [e for e in old if key(e) not in new_keys]
    return appeared, vanished
