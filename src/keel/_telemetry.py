"""OpenTelemetry for keel calls: keel's attributes on the SDK's span, the GenAI client metrics, span ids on log lines.

The `anthropic` SDK makes one CLIENT span per API call (`anthropic.messages.create`): every retry of the SDK's
own loop is inside it, and keel's middleware runs while it is the current span. keel makes no span of its own;
it adds `keel.*` attributes to that span while the span is still open:

- at each HTTP attempt (the middleware): `keel.call_id`, `keel.mode`, `keel.attempts` and `keel.rounds` (the keel
  call's so far), `keel.rate_limit.wait_s` (seconds the call has waited for the rate limiter);
- on the attempt whose error ends the API call (no SDK retry follows): `keel.error_class`;
- when the response is known: `keel.cost_usd`, the cost of this API call's response. A plain call's response is
  priced in the middleware; a stream's when its `message_stop` reaches keel, before the SDK ends the span at the
  end of the body.

A keel call can make several API calls, so several spans: keel's own retry rounds (background policy), stream
restarts and resumes, continuations. Each span then carries the figures of its own API call (`keel.cost_usd`) and
the keel call's running ones (`keel.attempts`, `keel.rounds`). A stream broken by an error event: the SDK ends the
span as the error is raised, before keel sees it, so that span has the SDK's `error.type` and no `keel.error_class`.

Metrics, recorded when the call ends (a message call; not batch submissions, polls or token counts):
`gen_ai.client.operation.duration` and `gen_ai.client.token.usage` as the GenAI semantic conventions define them
(with their advised bucket boundaries), `keel.client.cost` (USD) and `keel.client.retries` (by error class).

Without a configured tracer or meter provider none of this is computed: the SDK makes no span, and no metric is
recorded. opentelemetry-api is imported only when a client with telemetry is made.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from ._records import DeferredCallRecord

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span

    from ._records import CallRecord

TOKEN_USAGE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""`gen_ai.client.token.usage`: the semantic conventions' advised explicit bucket boundaries."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""`gen_ai.client.operation.duration` (seconds): the semantic conventions' advised explicit bucket boundaries."""

PROVIDER = {"gen_ai.provider.name": "anthropic"}  # as the SDK's spans name it


class _Instruments(NamedTuple):
    token_usage: Histogram
    duration: Histogram
    cost: Counter
    retries: Counter


def _instruments(provider: MeterProvider) -> _Instruments:
    from . import __version__

    meter = provider.get_meter("keel", __version__)
    return _Instruments(
        meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
        ),
        meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        ),
        meter.create_counter("keel.client.cost", unit="USD", description="What the calls cost, at keel's prices."),
        meter.create_counter("keel.client.retries", unit="{retry}", description="Attempts that retried an error."),
    )


class Telemetry:
    """Where a client's OpenTelemetry goes: `keel.Client(telemetry=keel.Telemetry(meter_provider=...))`.

    `meter_provider`: the provider of keel's metrics; by default the global one (`opentelemetry.metrics.
    set_meter_provider`), looked up at each call, so one configured after the client is made is used. Spans are
    the SDK's: give the SDK client its tracer provider (`anthropic.Anthropic(open_telemetry={"tracer_provider":
    ...})`) or set the global one.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        self.meter_provider = meter_provider
        self.current_span = trace.get_current_span
        self._global_provider = metrics.get_meter_provider
        # no provider configured: the API's stand-ins, which record nothing (nothing is worth computing for them)
        self._idle = (_ProxyMeterProvider, metrics.NoOpMeterProvider)
        self._made_for: object = None
        self._lock = threading.Lock()
        self._instruments: _Instruments | None = None

    def instruments(self) -> _Instruments | None:
        """keel's instruments, or None while no meter provider is configured."""
        provider = self.meter_provider or self._global_provider()
        if provider is not self._made_for:
            with self._lock:  # made once per provider, whichever thread gets there first
                if provider is not self._made_for:
                    self._instruments = None if isinstance(provider, self._idle) else _instruments(provider)
                    self._made_for = provider
        return self._instruments

    def sdk_span(self, outer: Span | None) -> Span | None:
        """The SDK's span of the API call in progress (called from the middleware), None when the SDK made none
        (its tracing is off or nothing records): the current span is then `outer`, the caller's, left alone."""
        span = self.current_span()
        return span if span is not outer and span.is_recording() else None

    def retried(self, error_class: str, model: Any) -> None:
        """An attempt that retries an error of `error_class`."""
        instruments = self.instruments()
        if instruments is not None:
            attributes = {**PROVIDER, "keel.error_class": error_class}
            if isinstance(model, str):
                attributes["gen_ai.request.model"] = model
            instruments.retries.add(1, attributes)

    def call_ended(self, record: CallRecord | DeferredCallRecord, request_model: Any) -> None:
        """A message call's metrics, from its call record (a deferred one is built only when they are recorded)."""
        instruments = self.instruments()
        if instruments is None:
            return
        if isinstance(record, DeferredCallRecord):
            record = record.get()
        attributes: dict[str, str] = {**PROVIDER, "gen_ai.operation.name": "chat", "keel.mode": record.mode}
        if isinstance(request_model, str):
            attributes["gen_ai.request.model"] = request_model
        if record.error_class is not None:
            attributes["error.type"] = record.error_class
        elif record.model:
            attributes["gen_ai.response.model"] = record.model
        instruments.duration.record(record.latency_ms / 1000, attributes)
        usage = record.usage
        if record.error_class is None or usage.prompt_tokens or usage.output_tokens:  # a failure without usage: none
            instruments.token_usage.record(usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"})
            instruments.token_usage.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        if record.cost_usd:
            instruments.cost.add(record.cost_usd, attributes)


def telemetry_of(option: bool | Telemetry) -> Telemetry | None:
    """A client's `telemetry` option as it is used: True is the shared default `Telemetry()`, False none."""
    if isinstance(option, Telemetry):
        return option
    if option is not True and option is not False:
        raise ValueError(f"telemetry: expected True, False or a keel.Telemetry, got {option!r}")
    return _default() if option else None


_DEFAULT: list[Telemetry] = []


def _default() -> Telemetry:
    if not _DEFAULT:
        _DEFAULT.append(Telemetry())
    return _DEFAULT[0]
