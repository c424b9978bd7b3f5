"""Model prices and what a response cost.

Prices live in one dated data file (`keel/data/prices.json`, USD per million tokens) because they change
and sources disagree: replace it with your own file (`load_prices(path)` or `KEEL_PRICES_FILE`) or patch a
few models (`load_prices(overrides=...)`).

Arithmetic is done in `Decimal` from the prices' shortest decimal form, so a cost is the exact decimal
product (e.g. 1,234 tokens at $0.10/MTok is exactly 0.0001234) and `cost()` is its nearest float: tests and
reports can compare costs with `==`. `cost_breakdown()` keeps the `Decimal`s for exact summing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date
from decimal import Context, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from ._exceptions import PriceDataError
from ._usage import Usage

__all__ = [
    "PRICES_ENV_VAR",
    "CostBreakdown",
    "ModelPrice",
    "PriceDataError",
    "PriceTable",
    "load_prices",
]

logger = logging.getLogger("keel")

PRICES_ENV_VAR = "KEEL_PRICES_FILE"
"""Environment variable naming a prices file to use instead of the packaged one."""

_PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_TOP_LEVEL_KEYS = {"as_of", "currency", "unit", "batch_multiplier", "sources", "notes", "models"}
_MODEL_KEYS = {*_PRICE_FIELDS, "aliases", "long_context", "note"}
_UNIT = "per million tokens"
_MILLION = Decimal(1_000_000)
_ONE = Decimal(1)


@dataclass(frozen=True)
class ModelPrice:
    """One model's list prices in USD per million tokens.

    Attributes:
        input: uncached input.
        output: generated tokens.
        cache_write_5m: prompt-cache writes with the 5-minute TTL.
        cache_write_1h: prompt-cache writes with the 1-hour TTL.
        cache_read: prompt-cache reads.
        long_context_threshold: a prompt (input + cache writes + cache reads) over this many tokens is billed
            at `long_context_multiplier` times every price of that request, output included (Haiku 5.5: over
            100k, x5); None for no such tier.
        long_context_multiplier: see `long_context_threshold`.
        note: where the prices come from, or a caveat.
    """

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_context_threshold: int | None = None
    long_context_multiplier: float = 1.0
    note: str = ""


@dataclass(frozen=True)
class CostBreakdown:
    """The exact cost of one response by billing category, in USD, after batch and long-context multipliers.

    Attributes:
        model: the priced model id (an alias resolved).
        input: uncached input.
        output: generated tokens.
        cache_write_5m: 5-minute cache writes.
        cache_write_1h: 1-hour cache writes.
        cache_read: cache reads.
        batch: billed at the batch rate.
        long_context: billed at the long-context tier.
    """

    model: str
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    batch: bool
    long_context: bool

    @property
    def total(self) -> Decimal:
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read


def _dec(value: float) -> Decimal:
    """The decimal a price was written as: `str` gives the shortest repr, so 0.1 becomes exactly 0.1."""
    return Decimal(str(value))


_EXACT = Context(prec=60)
"""Far more precision than tokens x price needs: every product and quotient in a cost is exact."""


@dataclass(frozen=True, slots=True)
class _DecimalPrice:
    """A `ModelPrice` as the `Decimal`s the cost arithmetic uses, computed once per price."""

    source: ModelPrice
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    long_context_multiplier: Decimal
    # The same five prices as exact integers over one denominator, for `cost`: summing integers and dividing
    # once gives the float nearest the exact total, as `float(sum of Decimals)` does, at a fraction of the cost.
    numerators: tuple[int, int, int, int, int]
    denominator: int
    long_context_ratio: tuple[int, int]

    @classmethod
    def of(cls, price: ModelPrice) -> _DecimalPrice:
        in_, out, write_5m, write_1h, read = (
            _dec(v) for v in (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read)
        )
        ratios = [d.as_integer_ratio() for d in (in_, out, write_5m, write_1h, read)]
        denominator = math.lcm(*(den for _, den in ratios))
        n0, n1, n2, n3, n4 = (num * (denominator // den) for num, den in ratios)
        long_context = _dec(price.long_context_multiplier)
        return cls(
            price,
            in_,
            out,
            write_5m,
            write_1h,
            read,
            long_context,
            (n0, n1, n2, n3, n4),
            denominator,
            long_context.as_integer_ratio(),
        )


class PriceTable:
    """Prices by model id (aliases resolve to their model), dated `as_of`."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        *,
        as_of: date,
        aliases: Mapping[str, str] | None = None,
        batch_multiplier: float = 0.5,
        currency: str = "USD",
        source: str = "",
        sources: str = "",
    ) -> None:
        self._prices = dict(prices)
        self._aliases = dict(aliases or {})
        for alias, target in self._aliases.items():
            if target not in self._prices:
                raise ValueError(f"alias {alias!r} points to {target!r}, which has no price")
        self.as_of = as_of
        self.batch_multiplier = batch_multiplier
        self.currency = currency
        self.source = source
        """Where the table was loaded from (a path, or the packaged file)."""
        self.sources = sources
        """The data file's own note on where its prices come from."""
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._decimals: dict[str, _DecimalPrice] = {}  # by priced model id, filled on first use

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models, as_of={self.as_of.isoformat()}, source={self.source!r})"

    @property
    def models(self) -> tuple[str, ...]:
        """The priced model ids (not their aliases)."""
        return tuple(self._prices)

    @property
    def aliases(self) -> Mapping[str, str]:
        return dict(self._aliases)

    def canonical(self, model: str) -> str | None:
        """The priced id for a model id or alias, or None if the table has no price for it."""
        if model in self._prices:
            return model
        return self._aliases.get(model)

    def price_for(self, model: str) -> ModelPrice | None:
        canonical = self.canonical(model)
        return None if canonical is None else self._prices[canonical]

    def _warn_unknown(self, model: str) -> None:
        with self._lock:
            if model in self._warned:
                return
            self._warned.add(model)
        logger.warning(
            "keel has no price for model %r (prices as of %s from %s); its cost is reported as None. "
            "Add it with load_prices(overrides={%r: {...}}) or a prices file.",
            model,
            self.as_of.isoformat(),
            self.source or "code",
            model,
        )

    def _exact_parts(
        self, model: str, usage: Any, batch: bool
    ) -> tuple[str, tuple[Decimal, Decimal, Decimal, Decimal, Decimal], bool] | None:
        """(priced model id, the five exact costs in `CostBreakdown` order, long_context), or None if unknown."""
        canonical = self.canonical(model)
        if canonical is None:
            self._warn_unknown(model)
            return None
        price = self._prices[canonical]
        tokens = Usage.of(usage)
        long_context = price.long_context_threshold is not None and tokens.prompt_tokens > price.long_context_threshold
        decimals = self._decimals.get(canonical)
        if decimals is None or decimals.source is not price:
            decimals = self._decimals[canonical] = _DecimalPrice.of(price)
        multiply, divide = _EXACT.multiply, _EXACT.divide
        factor = decimals.long_context_multiplier if long_context else _ONE
        if batch:
            factor = multiply(factor, _dec(self.batch_multiplier))

        def part(count: int, per_million: Decimal) -> Decimal:
            if factor is _ONE:  # x Decimal(1) changes neither the digits nor the exponent
                return divide(multiply(Decimal(count), per_million), _MILLION)
            return divide(multiply(multiply(Decimal(count), per_million), factor), _MILLION)

        parts = (
            part(tokens.input_tokens, decimals.input),
            part(tokens.output_tokens, decimals.output),
            part(tokens.cache_write_5m_tokens, decimals.cache_write_5m),
            part(tokens.cache_write_1h_tokens, decimals.cache_write_1h),
            part(tokens.cache_read_tokens, decimals.cache_read),
        )
        return canonical, parts, long_context

    def cost_breakdown(self, model: str, usage: Any, *, batch: bool = False) -> CostBreakdown | None:
        """The exact cost by category, or None (with one warning per model per table) for an unknown model."""
        exact = self._exact_parts(model, usage, batch)
        if exact is None:
            return None
        canonical, (in_, out, write_5m, write_1h, read), long_context = exact
        return CostBreakdown(
            model=canonical,
            input=in_,
            output=out,
            cache_write_5m=write_5m,
            cache_write_1h=write_1h,
            cache_read=read,
            batch=batch,
            long_context=long_context,
        )

    def cost(self, model: str, usage: Any, *, batch: bool = False) -> float | None:
        """USD cost of one response's usage; `batch=True` bills the batch rate (50%, stacking with caching).

        `usage` is a `keel.Usage`, an `anthropic.types.Usage` / `MessageDeltaUsage` or a dict with the same fields.
        An unknown model gives None and logs one warning on the "keel" logger per model per table.
        """
        canonical = model if model in self._prices else self._aliases.get(model)  # `canonical()`, inlined
        if canonical is None:
            self._warn_unknown(model)
            return None
        price = self._prices[canonical]
        tokens = Usage.of(usage)
        input_, output = tokens.input_tokens, tokens.output_tokens
        write_5m, write_1h, read = tokens.cache_write_5m_tokens, tokens.cache_write_1h_tokens, tokens.cache_read_tokens
        decimals = self._decimals.get(canonical)
        if decimals is None or decimals.source is not price:
            decimals = self._decimals[canonical] = _DecimalPrice.of(price)
        n = decimals.numerators
        numerator = input_ * n[0] + output * n[1] + write_5m * n[2] + write_1h * n[3] + read * n[4]
        denominator = decimals.denominator * 1_000_000
        threshold = price.long_context_threshold
        if threshold is not None and input_ + write_5m + write_1h + read > threshold:  # `Usage.prompt_tokens`
            numerator *= decimals.long_context_ratio[0]
            denominator *= decimals.long_context_ratio[1]
        if batch:
            batch_num, batch_den = _dec(self.batch_multiplier).as_integer_ratio()
            numerator *= batch_num
            denominator *= batch_den
        return numerator / denominator  # int / int: the float nearest the exact cost

    def message_cost(self, message: Any, *, batch: bool = False) -> float | None:
        """Cost of an `anthropic.types.Message` (its `model` and `usage`)."""
        return self.cost(message.model, message.usage, batch=batch)

    def batch_savings(self, model: str, usage: Any) -> float | None:
        """What the Batch API saves on this usage: standard cost minus batch cost (None for an unknown model)."""
        standard = self.cost_breakdown(model, usage)
        if standard is None:
            return None
        batched = self.cost_breakdown(model, usage, batch=True)
        assert batched is not None
        return float(standard.total - batched.total)

    def with_overrides(self, overrides: Mapping[str, ModelPrice | Mapping[str, float]]) -> PriceTable:
        """A new table with some models replaced (a `ModelPrice`) or patched (a mapping of fields).

        A key that is an alias patches the model it points to. A mapping for a model the table does not
        know must give all five prices.
        """
        prices = dict(self._prices)
        for key, value in overrides.items():
            target = self.canonical(key) or key
            if isinstance(value, ModelPrice):
                prices[target] = value
            elif isinstance(value, Mapping):
                prices[target] = _patched(prices.get(target), value, key)
            else:
                raise PriceDataError("overrides", key, f"expected a ModelPrice or a mapping, got {value!r}")
        return PriceTable(
            prices,
            as_of=self.as_of,
            aliases=self._aliases,
            batch_multiplier=self.batch_multiplier,
            currency=self.currency,
            source=f"{self.source} + overrides" if self.source else "overrides",
            sources=self.sources,
        )


def _number(source: str, field: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PriceDataError(source, field, f"expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise PriceDataError(
            source, field, f"expected a {'positive' if positive else 'non-negative'} number, got {value!r}"
        )
    return float(value)


def _threshold(source: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PriceDataError(source, field, f"expected a positive whole number of tokens, got {value!r}")
    return value


def _patched(base: ModelPrice | None, patch: Mapping[str, Any], key: str) -> ModelPrice:
    known = {f.name for f in fields(ModelPrice)} - {"note"}
    for name in patch:
        if name not in known:
            raise PriceDataError("overrides", f"{key}.{name}", f"unknown field (known: {', '.join(sorted(known))})")
    if base is None:
        missing = [name for name in _PRICE_FIELDS if name not in patch]
        if missing:
            raise PriceDataError(
                "overrides", key, f"model is not in the price table, so all prices are needed; missing {missing}"
            )
        base = ModelPrice(0, 0, 0, 0, 0)
    values: dict[str, Any] = {}
    for name, value in patch.items():
        where = f"{key}.{name}"
        if name == "long_context_threshold":
            values[name] = None if value is None else _threshold("overrides", where, value)
        else:
            values[name] = _number("overrides", where, value, positive=name == "long_context_multiplier")
    return replace(base, **values)


def _model_entry(source: str, model: str, raw: Any) -> tuple[ModelPrice, list[str]]:
    where = f"models.{model}"
    if not isinstance(raw, dict):
        raise PriceDataError(source, where, f"expected an object, got {raw!r}")
    for key in raw:
        if key not in _MODEL_KEYS and not key.startswith("_"):
            raise PriceDataError(source, f"{where}.{key}", f"unknown field (known: {', '.join(sorted(_MODEL_KEYS))})")
    for name in _PRICE_FIELDS:
        if name not in raw:
            raise PriceDataError(source, f"{where}.{name}", "missing")
    numbers = {name: _number(source, f"{where}.{name}", raw[name]) for name in _PRICE_FIELDS}
    threshold: int | None = None
    multiplier = 1.0
    long_context = raw.get("long_context")
    if long_context is not None:
        if not isinstance(long_context, dict) or set(long_context) != {"threshold_tokens", "multiplier"}:
            raise PriceDataError(
                source,
                f"{where}.long_context",
                'expected {"threshold_tokens": N, "multiplier": X}, got ' + repr(long_context),
            )
        threshold = _threshold(source, f"{where}.long_context.threshold_tokens", long_context["threshold_tokens"])
        multiplier = _number(source, f"{where}.long_context.multiplier", long_context["multiplier"], positive=True)
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise PriceDataError(source, f"{where}.note", f"expected a string, got {note!r}")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise PriceDataError(source, f"{where}.aliases", f"expected a list of model ids, got {aliases!r}")
    price = ModelPrice(**numbers, long_context_threshold=threshold, long_context_multiplier=multiplier, note=note)
    return price, aliases


def _parse(data: Any, source: str) -> PriceTable:
    if not isinstance(data, dict):
        raise PriceDataError(source, None, "expected a JSON object at the top level")
    for key in data:
        if key not in _TOP_LEVEL_KEYS and not key.startswith("_"):
            raise PriceDataError(source, key, f"unknown field (known: {', '.join(sorted(_TOP_LEVEL_KEYS))})")
    raw_date = data.get("as_of")
    if not isinstance(raw_date, str):
        raise PriceDataError(source, "as_of", f"expected a date like 2026-11-24, got {raw_date!r}")
    try:
        as_of = date.fromisoformat(raw_date)
    except ValueError:
        raise PriceDataError(source, "as_of", f"expected a date like 2026-11-24, got {raw_date!r}") from None
    unit = data.get("unit", _UNIT)
    if unit != _UNIT:
        raise PriceDataError(source, "unit", f"prices must be {_UNIT!r}, got {unit!r}")
    currency = data.get("currency", "USD")
    sources = data.get("sources", "")
    for name, value in (("currency", currency), ("sources", sources)):
        if not isinstance(value, str):
            raise PriceDataError(source, name, f"expected a string, got {value!r}")
    notes = data.get("notes", [])
    if not isinstance(notes, str | list):
        raise PriceDataError(source, "notes", f"expected a string or a list of strings, got {notes!r}")
    batch_multiplier = _number(source, "batch_multiplier", data.get("batch_multiplier", 0.5), positive=True)
    if batch_multiplier > 1:
        raise PriceDataError(source, "batch_multiplier", f"expected at most 1, got {batch_multiplier!r}")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise PriceDataError(source, "models", "expected a non-empty object of model id -> prices")
    prices: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    for model, raw in models.items():
        price, model_aliases = _model_entry(source, model, raw)
        prices[model] = price
        for alias in model_aliases:
            if alias in models or alias in aliases:
                raise PriceDataError(source, f"models.{model}.aliases", f"{alias!r} is already a model id or alias")
            aliases[alias] = model
    return PriceTable(
        prices,
        as_of=as_of,
        aliases=aliases,
        batch_multiplier=batch_multiplier,
        currency=currency,
        source=source,
        sources=sources,
    )


def load_prices(
    path: str | Path | None = None,
    overrides: Mapping[str, ModelPrice | Mapping[str, float]] | None = None,
) -> PriceTable:
    """Load a price table: `path`, else the file named by `KEEL_PRICES_FILE`, else keel's packaged file.

    A file replaces the packaged prices entirely; `overrides` then patches single models (see
    `PriceTable.with_overrides`). A bad file raises `PriceDataError` naming the file and the field.
    """
    if path is None:
        path = os.environ.get(PRICES_ENV_VAR) or None
    if path is None:
        source = "keel/data/prices.json"
        text = resources.files("keel").joinpath("data/prices.json").read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise PriceDataError(source, None, f"cannot read the prices file: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PriceDataError(
            source, None, f"not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}"
        ) from None
    table = _parse(data, source)
    return table.with_overrides(overrides) if overrides else table
