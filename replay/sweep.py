"""``--sweep`` settings: change one detector parameter or one rule threshold in rule files' data,
and find the Pareto frontier of the results. Pure: YAML data in, YAML data out.

Why on the rule files' data rather than on a compiled RuleSet: the changed files go through
the same loader as any rules (validation, guards, detector parameter checks), so a sweep value
that a rule file could not hold is refused the same way, with the same message.

Syntax (one setting per ``--sweep``; values are YAML, split on commas outside brackets):

- ``detectors.KIND.PARAM=a,b,c``: the ``detectors:`` section's parameter, e.g.
  ``detectors.spend.min_excess_usd=0.5,1,2`` or ``detectors.spend.thresholds=[3,5,8],[4,6,9]``.
- ``rule.NAME:VAR=a,b,c``: the number that rule NAME's ``when`` compares VAR with, e.g.
  ``rule.spend-spike:anomaly.spend.score=4,6,8`` rewrites ``anomaly.spend.score > 6`` to ``> 4``.
  ``rule.*:VAR`` changes every rule whose ``when`` compares VAR.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from spendwarden.exceptions import ConfigError
from spendwarden.rules.compiler import VARIABLES

DETECTOR_KINDS: tuple[str, ...] = VARIABLES["anomaly"]  # the detectors rules can read
_VAR = re.compile(r"^[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)+$")
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@dataclass(frozen=True)
class Sweep:
    """One parameter and the values to try. ``target`` is ``detectors`` or ``rule``."""

    target: str
    name: str  # detector kind, or rule name (``*`` for all)
    param: str  # detector parameter, or the CEL variable compared in ``when``
    values: tuple[Any, ...]
    text: str

    @property
    def label(self) -> str:
        return self.text.split("=", 1)[0]


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets: ``[3,5,8],[4,6,9]`` is two values."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def parse_sweep(text: str) -> Sweep:
    """Read a ``--sweep`` setting; a malformed one raises ConfigError naming the expected forms."""
    forms = "detectors.KIND.PARAM=a,b,c or rule.NAME:VAR=a,b,c (e.g. rule.spend-spike:anomaly.spend.score=4,6,8)"
    key, sep, raw = text.partition("=")
    if not sep or not raw.strip():
        raise ConfigError(f"--sweep {text!r}: expected {forms}")
    try:
        values = tuple(yaml.safe_load(v) for v in split_values(raw))
    except yaml.YAMLError as exc:
        raise ConfigError(f"--sweep {text!r}: a value is not YAML ({exc})") from None
    if any(v is None or v == "" for v in values):
        raise ConfigError(f"--sweep {text!r}: an empty value")
    if key.startswith("detectors."):
        parts = key.split(".")
        if len(parts) != 3 or parts[1] not in DETECTOR_KINDS or not parts[2]:
            raise ConfigError(f"--sweep {text!r}: expected detectors.KIND.PARAM with KIND one of "
                              f"{', '.join(DETECTOR_KINDS)}")
        return Sweep("detectors", parts[1], parts[2], values, text)
    if key.startswith("rule.") and ":" in key:
        name, _, var = key[len("rule."):].partition(":")
        if not name or not _VAR.match(var):
            raise ConfigError(f"--sweep {text!r}: expected rule.NAME:VAR with VAR a variable such as "
                              "anomaly.spend.score")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ConfigError(f"--sweep {text!r}: a rule threshold must be a number, not {bad[0]!r}")
        return Sweep("rule", name, var, values, text)
    raise ConfigError(f"--sweep {text!r}: expected {forms}")


def rewrite_threshold(when: str, var: str, value: float) -> str | None:
    """``when`` with every number compared to ``var`` set to ``value``; None if it compares none."""
    v = re.escape(var)
    number = f"{value:g}" if isinstance(value, float) else str(value)
    after = re.compile(rf"(\b{v}\s*(?:>=|>|<=|<|==|!=)\s*){_NUMBER}\b")
    before = re.compile(rf"\b{_NUMBER}(\s*(?:>=|>|<=|<|==|!=)\s*{v}\b)")
    text, n1 = after.subn(lambda m: m.group(1) + number, when)
    text, n2 = before.subn(lambda m: number + m.group(1), text)
    return text if n1 + n2 else None


def apply(files: Mapping[str, Any], sweep: Sweep, value: Any) -> dict[str, Any]:
    """The rule files' data (path -> parsed YAML) with ``sweep`` set to ``value``; inputs untouched."""
    out = {path: copy.deepcopy(data) for path, data in files.items()}
    if sweep.target == "detectors":
        holder = next((d for d in out.values() if isinstance(d, dict) and d.get("detectors")), None)
        if holder is None:  # no `detectors:` section yet: the first file gets one
            holder = next(iter(out.values()))
            holder["detectors"] = {}
        holder["detectors"].setdefault(sweep.name, {})[sweep.param] = value
        return out
    changed = 0
    for data in out.values():
        for rule in (data or {}).get("rules", []) or []:
            if sweep.name not in ("*", rule.get("name")):
                continue
            text = rewrite_threshold(str(rule.get("when", "")), sweep.param, value)
            if text is not None:
                rule["when"] = text
                changed += 1
            elif sweep.name != "*":
                raise ConfigError(f"--sweep {sweep.text!r}: rule {sweep.name}'s when does not compare "
                                  f"{sweep.param} with a number: {rule.get('when')!r}")
    if not changed:
        who = "no rule" if sweep.name == "*" else f"no rule named {sweep.name}"
        raise ConfigError(f"--sweep {sweep.text!r}: {who} compares {sweep.param} with a number")
    return out


def frontier(points: Sequence[tuple[float | None, float | None, float | None, float | None]]) -> list[bool]:
    """Pareto-optimal points of (recall, median delay, false per 10 tenant-weeks, growth/surge
    alerts): higher recall, lower others. A missing figure is the worst value."""
    def key(p: tuple[float | None, ...]) -> tuple[float, ...]:
        recall, delay, false, growth = p
        inf = float("inf")
        return (-(recall if recall is not None else -inf), delay if delay is not None else inf,
                false if false is not None else inf, growth if growth is not None else inf)

    keys = [key(p) for p in points]
    return [not any(all(o <= m for o, m in zip(other, mine)) and other != mine for other in keys)
            for mine in keys]
