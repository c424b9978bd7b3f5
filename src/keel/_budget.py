"""Budgets: a ceiling on what a job spends, kept before each request is sent, and the pre-flight estimate.

A `Budget` knows its ceiling, what has been spent, and what is reserved for the calls in flight. Before a
request is sent, its worst case is reserved: the estimated input tokens plus all of `max_tokens` as output, at
the model's prices (batch prices for a batch job). A reservation that would take the cost so far plus every
reservation past the ceiling is refused, so the caller stops sending. When the response arrives, the hold is
settled: the reservation is released and the real cost (from the response's usage) is added. All sums are
exact decimals, from keel's dated price table (`keel.load_prices`).

The input estimate is local and deliberately high: the rate limiter's rule for text (`keel.ratelimit.estimate`:
one token per 3 ASCII characters and one per other character) over the request's whole JSON (field names and the
model id included, standing in for the per-message overhead). Real tokenizers put about 4 characters of English
prose or code in a token, so ordinary text is over-estimated by a third or more; text of one-letter words or runs
of punctuation can still exceed it. An image or document sent inline counts its base64 text: a gross over-estimate
(a budget may refuse such a request that would fit). A request with `cache_control` is reserved as if every input
token were a 1-hour cache write, the dearest way input is billed. Not priced: server tool fees (web search and
the like).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._exceptions import BudgetExceeded, UnpricedModel
from ._pricing import PriceTable, load_prices
from ._usage import Usage
from .ratelimit.estimate import text_tokens


def _json(params: Mapping[str, Any]) -> str:
    # default=str: an SDK object in the messages (a previous response's content) counts by its text
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class _Bounds:
    """What a request's cost is bounded by: its model, estimated input, max_tokens, and whether it may write the
    prompt cache."""

    model: str
    input_tokens: int
    max_tokens: int
    caching: bool

    @classmethod
    def of(cls, params: Mapping[str, Any] | str) -> _Bounds:
        text = params if isinstance(params, str) else _json(params)
        data = json.loads(params) if isinstance(params, str) else params
        max_tokens = data.get("max_tokens")
        return cls(
            str(data.get("model")),
            text_tokens(text),
            max_tokens if isinstance(max_tokens, int) else 0,
            "cache_control" in text,
        )


def _usd(value: float | Decimal | str) -> Decimal:
    """An amount as the decimal it was written as (0.1 is exactly 0.1)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def format_usd(value: float | Decimal) -> str:
    return f"${value:,.6f}"


class _Pricer:
    """Exact costs at a table's standard or batch prices; a model without a price raises `UnpricedModel`."""

    def __init__(self, prices: PriceTable | None, batch: bool) -> None:
        self.prices = prices or load_prices()
        self.batch = batch

    def cost(self, model: str, usage: Any) -> Decimal:
        breakdown = self.prices.cost_breakdown(model, usage, batch=self.batch)
        if breakdown is None:
            raise UnpricedModel(model)
        return breakdown.total

    def input_only(self, bounds: _Bounds) -> Decimal:
        return self.cost(bounds.model, Usage(input_tokens=bounds.input_tokens))

    def worst_case(self, bounds: _Bounds) -> Decimal:
        """Every estimated input token at its dearest (a 1-hour cache write when the request marks cache breakpoints),
        and all of max_tokens as output."""
        if bounds.caching:
            usage = Usage(output_tokens=bounds.max_tokens, cache_write_1h_tokens=bounds.input_tokens)
        else:
            usage = Usage(input_tokens=bounds.input_tokens, output_tokens=bounds.max_tokens)
        return self.cost(bounds.model, usage)


@dataclass(eq=False)
class Hold:
    """What a `Budget` reserved for a request in flight (or a batch shard) until it is settled.

    Attributes:
        usd: the amount reserved: the worst case.
        model: the model whose prices settle it (`Budget.settle`); None for a hold settled at a known cost.
        settled: whether it has been settled (a hold is settled once).
    """

    usd: Decimal
    model: str | None = None
    settled: bool = False


class Budget:
    """A ceiling in USD on what a job spends, kept before each request is sent.

        budget = Budget(5.00)                       # standard prices; Budget(5.00, batch=True) for batches
        hold = budget.reserve("claude-haiku-5-5", input_tokens=1_200, max_tokens=500)
        if hold is None:
            ...                                     # this request could pass the budget: do not send it
        reply = client.messages.create(...)
        budget.settle(hold, reply.message.usage)    # the reservation gives way to the real cost

    `spent_usd` starts at what an earlier run of the same job spent. One budget serves one thread (or one event
    loop); `keel run`, `keel batch run` and `AsyncClient.map` use it that way.
    """

    def __init__(
        self,
        limit_usd: float | Decimal | str,
        prices: PriceTable | None = None,
        *,
        batch: bool = False,
        spent_usd: float | Decimal = 0,
    ) -> None:
        limit = _usd(limit_usd)
        if not limit.is_finite() or limit < 0:
            raise ValueError(f"a budget is a number of USD >= 0, got {limit_usd!r}")
        self._pricer = _Pricer(prices, batch)
        self._limit = limit
        self._spent = _usd(spent_usd)
        self._reserved = Decimal(0)

    @property
    def batch(self) -> bool:
        """Whether it prices at batch rates."""
        return self._pricer.batch

    @property
    def limit_usd(self) -> float:
        return float(self._limit)

    @property
    def spent_usd(self) -> float:
        """What the settled requests cost, with what earlier runs spent."""
        return float(self._spent)

    @property
    def reserved_usd(self) -> float:
        """The worst cases of the holds not settled yet."""
        return float(self._reserved)

    @property
    def left_usd(self) -> float:
        """The ceiling, less what was spent and what is reserved."""
        return float(self._limit - self._spent - self._reserved)

    def worst_case(self, model: str, input_tokens: int, max_tokens: int, *, caching: bool = False) -> Decimal:
        """The most a request can cost: `input_tokens` (as 1-hour cache writes with `caching`) and `max_tokens` of
        output, at the model's prices. A model without a price raises `UnpricedModel`."""
        return self._pricer.worst_case(_Bounds(model, input_tokens, max_tokens, caching))

    def worst_case_for(self, params: Mapping[str, Any] | str) -> Decimal:
        """The worst case of a Messages request, from its params (or their JSON), its input estimated."""
        return self._pricer.worst_case(_Bounds.of(params))

    def reserve(self, model: str, input_tokens: int, max_tokens: int, *, caching: bool = False) -> Hold | None:
        """Reserve a request's worst case (see `worst_case`); None, reserving nothing, when it could pass the
        budget."""
        return self.reserve_usd(self.worst_case(model, input_tokens, max_tokens, caching=caching), model=model)

    def reserve_for(self, params: Mapping[str, Any] | str) -> Hold | None:
        """`reserve` for a Messages request, from its params (or their JSON), its input estimated."""
        bounds = _Bounds.of(params)
        return self.reserve_usd(self._pricer.worst_case(bounds), model=bounds.model)

    def reserve_usd(self, usd: Decimal, *, model: str | None = None, force: bool = False) -> Hold | None:
        """Reserve an amount; None when the cost so far plus every reservation would pass the ceiling. `force`
        reserves it whatever: work already sent (a batch submitted by an earlier run) is counted, not refused."""
        if not force and self._spent + self._reserved + usd > self._limit:
            return None
        self._reserved += usd
        return Hold(usd, model)

    def settle(self, hold: Hold, usage: Any) -> Decimal:
        """Release a hold and add the real cost of `usage` (an SDK usage, a `keel.Usage` or a dict) at its model's
        prices; returns that cost."""
        if hold.model is None:
            raise ValueError("this hold has no model to price a usage at: settle it with settle_usd")
        cost = self._pricer.cost(hold.model, usage)
        self.settle_usd(hold, cost)
        return cost

    def settle_usd(self, hold: Hold, usd: float | Decimal) -> None:
        """Release a hold and add a known cost (a batch shard's results; the worst case of an unknown outcome)."""
        if hold.settled:
            raise ValueError("this hold is already settled")
        hold.settled = True
        self._reserved -= hold.usd
        self._spent += _usd(usd)

    def add_spent(self, usd: float | Decimal) -> None:
        """Count a cost that had no hold here (what a request another runner left in flight may have cost)."""
        self._spent += _usd(usd)

    def exceeded(self, next_usd: Decimal) -> BudgetExceeded:
        """The error that stops a job whose next request (worst case `next_usd`) could pass the budget."""
        return BudgetExceeded(self.limit_usd, self.spent_usd, float(next_usd))

    def __repr__(self) -> str:
        return (
            f"Budget(limit={format_usd(self._limit)}, spent={format_usd(self._spent)}, "
            f"reserved={format_usd(self._reserved)})"
        )


@dataclass(frozen=True)
class CostEstimate:
    """What a set of requests could cost, before any is sent (the pre-flight estimate).

    Attributes:
        requests: how many requests.
        input_tokens: their input tokens, estimated high (see the module's docstring).
        max_output_tokens: the sum of their `max_tokens`.
        low_usd: the input alone, at input prices: what they cost if every answer were empty.
        high_usd: input plus all of `max_tokens` (the worst case a budget reserves): the most they can cost.
        batch: priced at batch rates.
        unpriced_models: models without a price; their requests are left out of both costs.
    """

    requests: int
    input_tokens: int
    max_output_tokens: int
    low_usd: float
    high_usd: float
    batch: bool
    unpriced_models: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a person: requests, tokens, and the low and high costs."""
        prices = "batch" if self.batch else "standard"
        text = (
            f"{self.requests:,} requests: about {self.input_tokens:,} input tokens (estimated high), at most "
            f"{self.max_output_tokens:,} output tokens; {format_usd(self.low_usd)} (input only) to "
            f"{format_usd(self.high_usd)} (input + max_tokens) at {prices} prices"
        )
        if self.unpriced_models:
            text += f"; no price for {', '.join(self.unpriced_models)} (not counted)"
        return text


def estimate_cost(
    requests: Iterable[Mapping[str, Any] | str], prices: PriceTable | None = None, *, batch: bool = False
) -> CostEstimate:
    """The pre-flight estimate of these requests (their params, or the params' JSON)."""
    pricer = _Pricer(prices, batch)
    count = input_tokens = output_tokens = 0
    low = high = Decimal(0)
    unpriced: set[str] = set()
    for params in requests:
        bounds = _Bounds.of(params)
        count += 1
        input_tokens += bounds.input_tokens
        output_tokens += bounds.max_tokens
        try:
            low += pricer.input_only(bounds)
            high += pricer.worst_case(bounds)
        except UnpricedModel:
            unpriced.add(bounds.model)
    return CostEstimate(count, input_tokens, output_tokens, float(low), float(high), batch, tuple(sorted(unpriced)))
