"""Versioned list prices, turned into integer tables so pricing an event is pure int math.

A pricebook file holds versions, each with an ``effective_from`` instant; the version in
force at an event's ``ts`` prices it, so re-pricing history gives the same answer as live.
Token prices become nano-dollars per million tokens (= femto-dollars per token), per-call and
per-GPU-second prices pico-dollars; an event's total is summed exactly in femto-dollars and
rounded half-even once to nano-dollars.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic import field_validator, model_validator

from spendwarden.exceptions import ConfigError, PricebookError
from spendwarden.streams.events import CostEvent, epoch_seconds

_TOKEN_SCALE = 10**9  # USD per Mtok -> nano-dollars per Mtok (= femto-dollars per token)
_UNIT_SCALE = 10**12  # USD per call / per GPU-second -> pico-dollars
_FEMTO_PER_PICO = 1000
_FEMTO_PER_NANO = 10**6
_PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cached_per_mtok", "per_call", "per_gpu_second")

# (input, output, cached) in femto-dollars per token; (per_call, per_gpu_second) in pico-dollars.
Rates = tuple[int, int, int, int, int]


class PriceEntry(BaseModel):
    """One priced model or service; any price left out costs nothing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    provider: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    input_per_mtok: Optional[Decimal] = Field(default=None, ge=0, allow_inf_nan=False)
    output_per_mtok: Optional[Decimal] = Field(default=None, ge=0, allow_inf_nan=False)
    cached_per_mtok: Optional[Decimal] = Field(default=None, ge=0, allow_inf_nan=False)
    per_call: Optional[Decimal] = Field(default=None, ge=0, allow_inf_nan=False)
    per_gpu_second: Optional[Decimal] = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _has_a_price(self) -> "PriceEntry":
        if all(getattr(self, name) is None for name in _PRICE_FIELDS):
            raise ValueError(f"no price given; set at least one of {', '.join(_PRICE_FIELDS)}")
        return self


class PricebookVersion(BaseModel):
    """A price table and the instant from which it applies."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=100)
    effective_from: AwareDatetime
    prices: list[PriceEntry]

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted ``version: 2026`` as an int; it is still a label.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _unique_entries(self) -> "PricebookVersion":
        seen: set[tuple[str, str]] = set()
        for index, entry in enumerate(self.prices):
            key = (entry.provider, entry.model)
            if key in seen:
                raise ValueError(f"entry {index}: {entry.provider}/{entry.model} is listed twice")
            seen.add(key)
        return self


class PricebookFile(BaseModel):
    """The whole file: one or more versions, each label used once."""

    model_config = ConfigDict(extra="forbid")

    versions: list[PricebookVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_versions(self) -> "PricebookFile":
        labels = [v.version for v in self.versions]
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"version labels must be unique; repeated: {', '.join(dupes)}")
        return self


def _scaled(value: Decimal | None, scale: int, where: str) -> int:
    """Exact integer of value × scale; finer precision than the unit would be silently lost."""
    if value is None:
        return 0
    try:
        scaled = value * scale
        exact = scaled == scaled.to_integral_value()
    except ArithmeticError:  # decimal.Overflow for absurd exponents
        raise PricebookError(f"{where}: price {value} is out of range") from None
    if not exact:
        raise PricebookError(f"{where}: price {value} is finer than the supported precision (1/{scale} USD)")
    return int(scaled)


def _rates(entry: PriceEntry, where: str) -> Rates:
    """Integer rates of one entry; cached tokens cost the input price unless given."""
    p_in = _scaled(entry.input_per_mtok, _TOKEN_SCALE, where)
    p_cached = p_in if entry.cached_per_mtok is None else _scaled(entry.cached_per_mtok, _TOKEN_SCALE, where)
    p_out = _scaled(entry.output_per_mtok, _TOKEN_SCALE, where)
    p_call = _scaled(entry.per_call, _UNIT_SCALE, where)
    return p_in, p_out, p_cached, p_call, _scaled(entry.per_gpu_second, _UNIT_SCALE, where)


def _round_half_even(num: int, den: int) -> int:
    """num/den rounded half-even, in integers (den > 0)."""
    q, r = divmod(num, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


class _Table:
    """One version's lookups: by (provider, model) and, as a fallback, by model alone."""

    __slots__ = ("version", "by_pair", "by_model")

    def __init__(self, version: PricebookVersion, source: str) -> None:
        self.version = version.version
        self.by_pair: dict[tuple[str, str], Rates] = {}
        self.by_model: dict[str, Rates] = {}
        for index, entry in enumerate(version.prices):
            where = f"{source}: version {version.version!r} entry {index} ({entry.provider}/{entry.model})"
            rates = _rates(entry, where)
            self.by_pair[(entry.provider, entry.model)] = rates
            self.by_model.setdefault(entry.model, rates)  # first listed wins when ambiguous

    def lookup(self, provider: str | None, model: str | None) -> Rates | None:
        if model is None:
            return None
        if provider is not None:
            rates = self.by_pair.get((provider, model))
            if rates is not None:
                return rates
        return self.by_model.get(model)


class Pricebook:
    """Prices events at their own timestamp; build with load(), default() or from_dict()."""

    def __init__(self, data: PricebookFile, source: str = "<pricebook>") -> None:
        ordered = sorted(data.versions, key=lambda v: v.effective_from)
        self.source = source
        self.versions: tuple[str, ...] = tuple(v.version for v in ordered)
        self._starts: list[float] = [v.effective_from.timestamp() for v in ordered]
        self._tables: list[_Table] = [_Table(v, source) for v in ordered]

    @classmethod
    def from_dict(cls, data: Any, source: str = "<pricebook>") -> "Pricebook":
        """Validate parsed YAML/JSON; errors name the source, version and entry index."""
        try:
            parsed = PricebookFile.model_validate(data)
        except ValidationError as exc:
            raise PricebookError(_describe(exc, data, source)) from None
        return cls(parsed, source)

    @classmethod
    def load(cls, path: str | Path) -> "Pricebook":
        """Read a pricebook YAML file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"pricebook {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"pricebook {path} cannot be read: {exc}") from None
        return cls.from_dict(_load_yaml(text, str(path)), str(path))

    @classmethod
    def default(cls) -> "Pricebook":
        """The illustrative list prices shipped with the package."""
        resource = files("spendwarden.streams") / "pricebooks" / "default.yaml"
        return cls.from_dict(_load_yaml(resource.read_text(encoding="utf-8"), "default.yaml"), "default.yaml")

    def pinned(self, version: str) -> "Pricebook":
        """This pricebook reduced to one version, in force at every time (`replay --reprice`)."""
        if version not in self.versions:
            raise ConfigError(f"pricebook {self.source} has no version {version!r}; "
                              f"it has {', '.join(self.versions)}")
        pinned = object.__new__(Pricebook)
        pinned.source = self.source
        pinned.versions = (version,)
        pinned._starts = [float("-inf")]
        pinned._tables = [self._tables[self.versions.index(version)]]
        return pinned

    def version_at(self, ts: float) -> str | None:
        """Label of the version in force at a POSIX timestamp (None before the first)."""
        i = bisect.bisect_right(self._starts, ts) - 1
        return self._tables[i].version if i >= 0 else None

    def price(self, event: CostEvent, ts: float | None = None) -> tuple[int | None, str | None]:
        """(cost in nano-dollars, version in force); cost None when nothing prices the event.

        ``ts`` is ``epoch_seconds(event.ts)`` when the caller already has it (ingest does).
        """
        i = bisect.bisect_right(self._starts, epoch_seconds(event.ts) if ts is None else ts) - 1
        if i < 0:
            return None, None
        table = self._tables[i]
        rates = table.lookup(event.provider, event.model_or_service)
        if rates is None:
            return None, table.version
        p_in, p_out, p_cached, p_call, p_gpu = rates
        cached = event.cached_tokens
        femto = (event.input_tokens - cached) * p_in + cached * p_cached + event.output_tokens * p_out
        femto += event.api_calls * p_call * _FEMTO_PER_PICO
        gpu = event.gpu_seconds
        if gpu and p_gpu:
            # The float's shortest repr is the value the sender meant (0.1, not 0.1000…0555).
            num, den = Decimal(repr(gpu)).as_integer_ratio()
            femto = femto * den + num * p_gpu * _FEMTO_PER_PICO
            return _round_half_even(femto, den * _FEMTO_PER_NANO), table.version
        nanos, sub_nano = divmod(femto, _FEMTO_PER_NANO)
        if sub_nano:  # token prices are usually whole nano-dollars per token: skip the call then
            nanos = _round_half_even(femto, _FEMTO_PER_NANO)
        return nanos, table.version


def _describe(exc: ValidationError, data: Any, source: str) -> str:
    """First validation error as 'file: version 'v' entry i: field: message (got x)'."""
    errors = exc.errors()
    err = errors[0]
    loc = list(err["loc"])
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "versions" and isinstance(loc[1], int):
        label: Any = None
        try:
            label = data["versions"][loc[1]].get("version")
        except (AttributeError, IndexError, KeyError, TypeError):
            pass
        parts.append(f"version {label!r}" if label is not None else f"version #{loc[1]}")
        loc = loc[2:]
        if len(loc) >= 2 and loc[0] == "prices" and isinstance(loc[1], int):
            parts.append(f"entry {loc[1]}")
            loc = loc[2:]
    message = err["msg"].removeprefix("Value error, ")
    if loc:
        message = f"{'.'.join(str(p) for p in loc)}: {message}"
    quiet = err["type"] in ("missing", "value_error", "extra_forbidden")
    if not quiet and not isinstance(err["input"], (dict, list)):
        message += f" (got {str(err['input'])[:60]!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {' '.join(parts) + ': ' if parts else ''}{message}{more}"


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that reads floats as exact Decimals (0.0004 stays 0.0004)."""


def _decimal_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return loader.construct_yaml_float(node)  # .inf / .nan: left for validation to refuse
    return value if value.is_finite() else float(value)


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal_float)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PricebookError(f"{source}: not valid YAML: {exc}") from None


class _Dumper(yaml.SafeDumper):
    """Writes Decimals as plain YAML numbers, never as floats with binary noise."""


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    text = format(value.normalize(), "f")
    if "." in text:
        return dumper.represent_scalar("tag:yaml.org,2002:float", text)
    return dumper.represent_scalar("tag:yaml.org,2002:int", text)


_Dumper.add_representer(Decimal, _represent_decimal)


def dump_yaml(data: dict[str, Any]) -> str:
    """Pricebook dict as YAML, one flow-style line per price entry."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=200)


def _per_mtok(value: Any) -> Decimal | None:
    """LiteLLM per-token cost → USD per million tokens, exact; None when absent or unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        dec = Decimal(str(value)) * 1_000_000
    except ArithmeticError:  # InvalidOperation, Overflow
        return None
    return dec.normalize() if dec.is_finite() and dec >= 0 else None


_LITELLM_FIELDS = (
    ("input_per_mtok", "input_cost_per_token"),
    ("output_per_mtok", "output_cost_per_token"),
    ("cached_per_mtok", "cache_read_input_token_cost"),
)


def import_litellm(data: dict[str, Any], version: str, effective_from: datetime) -> dict[str, Any]:
    """Convert LiteLLM's model_prices_and_context_window.json into pricebook structure."""
    if effective_from.tzinfo is None:
        raise PricebookError("import_litellm: effective_from must carry a timezone")
    prices: list[dict[str, Any]] = []
    for model, spec in data.items():
        if model == "sample_spec" or not isinstance(spec, dict):
            continue
        entry: dict[str, Any] = {"provider": str(spec.get("litellm_provider") or "unknown"), "model": model}
        for ours, theirs in _LITELLM_FIELDS:
            price = _per_mtok(spec.get(theirs))
            if price is not None:
                entry[ours] = price
        if "input_per_mtok" in entry or "output_per_mtok" in entry:
            prices.append(entry)
    when = effective_from.isoformat()
    return {"versions": [{"version": version, "effective_from": when, "prices": prices}]}
