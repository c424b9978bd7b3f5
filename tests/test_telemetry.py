"""keel's OpenTelemetry, with the real OpenTelemetry SDK and its in-memory exporters, against the emulator: keel's
attributes on the anthropic SDK's span of each API call, the GenAI client metrics and keel's counters, and the
span ids on the `keel` logger's records."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from keel_helpers import SIDES, Side, ask, fault
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from keel import AsyncClient, CallFailed, CallRecord, Client, JsonFormatter, Recorder, Reply, RetryPolicy, Telemetry
from keel.emulator import Emulator, async_client, client
from keel.ratelimit import Limits, RateLimiter, Reservation

MODEL = "claude-sonnet-5-5"
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


@dataclass
class Otel:
    """An OpenTelemetry SDK set up for one test: spans and metrics kept in memory, records captured."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    metrics: InMemoryMetricReader
    recorder: Recorder
    records: list[Any]

    def client(self, emulator: Emulator, sdk_traces: bool = True, **options: Any) -> Client:
        traces = {"tracer_provider": self.tracer_provider, "traces": sdk_traces}
        sdk = client(emulator, _strict_response_validation=True, open_telemetry=traces)
        options.setdefault("telemetry", Telemetry(self.meter_provider))
        return Client(sdk, records=self.recorder, **options)

    def async_client(self, emulator: Emulator, **options: Any) -> AsyncClient:
        sdk = async_client(emulator, open_telemetry={"tracer_provider": self.tracer_provider})
        return AsyncClient(sdk, records=self.recorder, telemetry=Telemetry(self.meter_provider), **options)

    def finished(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == "anthropic.messages.create"]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def calls(self) -> list[CallRecord]:
        return [record for record in self.records if isinstance(record, CallRecord)]


class _Captured(Recorder):
    """A Recorder that also keeps every record it is given, built."""

    def __init__(self, kept: list[Any]) -> None:
        super().__init__()
        self.kept = kept

    def emit(self, *records: Any) -> None:
        super().emit(*records)
        self.kept.extend(record.get() if hasattr(record, "get") else record for record in records)


@pytest.fixture
def otel() -> Iterator[Otel]:
    # the SDK's clients get `open_telemetry={"tracer_provider": ...}`: an option given is complete, so the SDK's
    # environment variables (ANTHROPIC_OPEN_TELEMETRY=false) cannot turn their spans off
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    records: list[Any] = []
    yield Otel(tracer_provider, spans, meter_provider, reader, _Captured(records), records)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def keel_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {key: value for key, value in (span.attributes or {}).items() if key.startswith("keel.")}


def assert_one_attempt_of(reply: Reply, span: ReadableSpan, mode: str) -> None:
    """`span` is the SDK's span of `reply`'s only API call, with keel's attributes."""
    assert span.attributes is not None and span.attributes["anthropic.request.id"] == reply.request_id
    assert keel_attributes(span) == {
        "keel.call_id": reply.record.call_id,
        "keel.mode": mode,
        "keel.attempts": 1,
        "keel.rounds": 1,
        "keel.cost_usd": reply.cost_usd,
    }


def by_token_type(points: list[HistogramDataPoint]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for point in points:
        kind = str(point.attributes["gen_ai.token.type"])
        sums[kind] = sums.get(kind, 0) + point.sum
    return sums


def test_a_calls_sdk_span_carries_keels_attributes_and_no_second_span_is_made(otel: Otel) -> None:
    keel = otel.client(Emulator())
    reply = keel.messages.create(model=MODEL, max_tokens=50, messages=ask("hello"))
    spans = otel.spans.get_finished_spans()
    assert [span.name for span in spans] == ["anthropic.messages.create"]
    [span] = spans
    assert_one_attempt_of(reply, span, "standard")
    assert span.status.status_code is StatusCode.OK


def test_a_529_retried_by_the_sdk_is_one_span_with_two_attempts_and_one_retry_counted(otel: Otel) -> None:
    keel = otel.client(Emulator())
    reply = keel.messages.create(
        model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault("status=529; times=1; retry_after_ms=1")
    )
    [span] = otel.finished()
    assert keel_attributes(span)["keel.attempts"] == reply.record.attempts == 2
    assert "keel.error_class" not in keel_attributes(span)  # the call succeeded: no error ended it
    assert span.status.status_code is StatusCode.OK
    [retries] = otel.points("keel.client.retries")
    assert retries.value == reply.record.retries == 1
    assert retries.attributes["keel.error_class"] == "overloaded"


def test_a_failed_calls_span_and_duration_carry_its_error_class(otel: Otel) -> None:
    keel = otel.client(Emulator())
    with pytest.raises(CallFailed) as failed:
        keel.messages.create(model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault("status=529; times=9"))
    record = failed.value.record
    [span] = otel.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert keel_attributes(span)["keel.error_class"] == record.error_class == "overloaded"
    assert keel_attributes(span)["keel.attempts"] == record.attempts == 3  # the interactive policy: 2 SDK retries
    [retries] = otel.points("keel.client.retries")
    assert retries.value == 2  # the third failed attempt ended the call: it was not retried
    [duration] = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "overloaded"
    assert "gen_ai.response.model" not in duration.attributes
    assert otel.points("gen_ai.client.token.usage") == []  # no usage was reported: none is made up


def test_keels_round_after_the_sdk_gave_up_is_a_second_span_and_the_first_keeps_its_error_class(otel: Otel) -> None:
    emulator = Emulator()
    emulator.inject("status=529; retry_after_ms=1", limit=2)  # the first round's two attempts
    rounds = RetryPolicy("rounds", max_retries=1, timeout=10, budget=30, backoff_base=0.01)
    reply = otel.client(emulator, policy=rounds).messages.create(model=MODEL, max_tokens=20, messages=ask("x"))
    first, second = otel.finished()
    assert first.status.status_code is StatusCode.ERROR
    assert keel_attributes(first)["keel.error_class"] == "overloaded"  # it ended the first API call
    assert keel_attributes(first)["keel.attempts"] == 2
    assert "keel.cost_usd" not in keel_attributes(first)
    assert "keel.error_class" not in keel_attributes(second)
    assert keel_attributes(second)["keel.attempts"] == reply.record.attempts == 3
    assert keel_attributes(second)["keel.cost_usd"] == reply.cost_usd  # the only response that was billed
    [retries] = otel.points("keel.client.retries")
    assert retries.value == reply.record.retries == 2  # the SDK's retry and keel's round


def test_a_request_the_api_refuses_at_once_has_its_error_class_on_its_only_attempt(otel: Otel) -> None:
    keel = otel.client(Emulator())
    with pytest.raises(CallFailed) as failed:
        keel.messages.create(model="claude-no-such-model", max_tokens=50, messages=ask("x"))
    [span] = otel.finished()
    assert keel_attributes(span)["keel.error_class"] == failed.value.record.error_class
    assert keel_attributes(span)["keel.attempts"] == 1


@pytest.mark.parametrize("side", SIDES)
def test_a_streams_span_carries_its_cost_set_before_the_sdk_ended_it(otel: Otel, side: Side) -> None:
    emulator = Emulator()
    if side == "sync":
        keel = otel.client(emulator)
        with keel.messages.stream(model=MODEL, max_tokens=50, messages=ask("tell me")) as stream:
            text = "".join(stream.text_stream)
        reply = stream.reply
    else:

        async def run() -> Any:
            keel = otel.async_client(emulator)
            async with keel.messages.stream(model=MODEL, max_tokens=50, messages=ask("tell me")) as stream:
                text = "".join([piece async for piece in stream.text_stream])
            await keel.close()
            return stream.reply, text

        reply, text = asyncio.run(run())
    assert reply is not None and text == reply.text
    [span] = otel.finished()
    assert_one_attempt_of(reply, span, "stream")


def test_a_stream_restarted_after_an_error_event_counts_one_retry_and_ends_on_a_second_span(otel: Otel) -> None:
    emulator = Emulator()
    emulator.inject("stream_error_after=1", limit=1)  # an error event before any content, on the first stream only
    keel = otel.client(emulator)
    with keel.messages.stream(model=MODEL, max_tokens=50, messages=ask("x")) as stream:
        stream.until_done()
    assert stream.reply is not None and stream.reply.record.retries == 1
    first, second = otel.finished()
    assert first.status.status_code is StatusCode.ERROR  # the SDK ended it as the error event was raised
    assert "keel.error_class" not in keel_attributes(first)  # before keel saw the error: documented
    assert keel_attributes(second)["keel.attempts"] == 2
    assert keel_attributes(second)["keel.cost_usd"] == stream.reply.cost_usd
    [retries] = otel.points("keel.client.retries")
    assert retries.value == 1 and retries.attributes["keel.error_class"] == "mid_stream"


def test_the_metrics_add_up_to_the_usage_and_cost_the_records_report(otel: Otel) -> None:
    keel = otel.client(Emulator())
    keel.messages.create(model=MODEL, max_tokens=40, messages=ask("one"))
    keel.messages.create(model="claude-haiku-4-5", max_tokens=80, messages=ask("two two"))
    with keel.messages.stream(model=MODEL, max_tokens=60, messages=ask("three three three")) as stream:
        stream.until_done()
    calls = otel.calls()
    assert len(calls) == 3
    tokens = by_token_type(otel.points("gen_ai.client.token.usage"))
    assert tokens == {
        "input": sum(call.usage.prompt_tokens for call in calls),
        "output": sum(call.usage.output_tokens for call in calls),
    }
    assert sum(point.value for point in otel.points("keel.client.cost")) == pytest.approx(
        sum(call.cost_usd or 0 for call in calls)
    )
    durations = otel.points("gen_ai.client.operation.duration")
    assert sum(point.count for point in durations) == 3
    assert sum(point.sum for point in durations) == pytest.approx(sum(call.latency_ms for call in calls) / 1000)
    for point in otel.points("gen_ai.client.token.usage"):
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "anthropic"
        assert point.attributes["gen_ai.request.model"] in (MODEL, "claude-haiku-4-5")
        assert str(point.attributes["gen_ai.response.model"]).startswith(str(point.attributes["gen_ai.request.model"]))


def test_the_histograms_have_the_semantic_conventions_units_and_advised_buckets(otel: Otel) -> None:
    keel = otel.client(Emulator())
    keel.messages.create(model=MODEL, max_tokens=40, messages=ask("one"))
    data = otel.metrics.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert metrics["gen_ai.client.token.usage"].unit == "{token}"
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    assert metrics["keel.client.cost"].unit == "USD"
    for point in otel.points("gen_ai.client.token.usage"):
        assert list(point.explicit_bounds) == TOKEN_BUCKETS
    for point in otel.points("gen_ai.client.operation.duration"):
        assert list(point.explicit_bounds) == DURATION_BUCKETS


def test_log_records_carry_the_ids_of_the_span_active_when_they_are_logged(otel: Otel) -> None:
    keel = otel.client(Emulator())
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    handler.addFilter(lambda record: record.name == "keel")  # the records; not keel.retrying's notices
    logger = logging.getLogger("keel")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    tracer = otel.tracer_provider.get_tracer("app")
    try:
        with tracer.start_as_current_span("handle request") as app:
            reply = keel.messages.create(
                model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault("status=529; times=1")
            )
        keel.messages.create(model=MODEL, max_tokens=50, messages=ask("outside any span"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [sdk_span] = [span for span in otel.finished() if keel_attributes(span)["keel.call_id"] == reply.record.call_id]
    mine = {(kind_and_status(r)): r for r in logged if fields(r)["call_id"] == reply.record.call_id}
    trace_id = format_trace_id(app.get_span_context().trace_id)
    # the 529's attempt record is logged as it happens, inside the SDK's span of the API call
    assert ids(mine["attempt", 529]) == (trace_id, format_span_id(sdk_span.context.span_id))
    # the call record when the call ends, after the SDK ended its span: the caller's span is the active one
    call = mine["call", None]
    assert ids(call) == (trace_id, format_span_id(app.get_span_context().span_id))
    line = json.loads(JsonFormatter().format(call))
    assert (line["trace_id"], line["span_id"], line["request_id"]) == (*ids(call), reply.request_id)
    outside = [r for r in logged if fields(r)["call_id"] != reply.record.call_id]
    assert outside and all(ids(r) == (None, None) for r in outside)
    assert "trace_id" not in json.loads(JsonFormatter().format(outside[-1]))


def fields(record: logging.LogRecord) -> dict[str, Any]:
    keel: dict[str, Any] = getattr(record, "keel")  # noqa: B009 - set through `extra`, unknown to type checkers
    return keel


def kind_and_status(record: logging.LogRecord) -> tuple[str, int | None]:
    return fields(record)["kind"], fields(record).get("status")


def ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    return getattr(record, "trace_id", None), getattr(record, "span_id", None)


def test_the_rate_limit_wait_is_on_the_span(otel: Otel) -> None:
    limits = Limits(requests=1, input_tokens=10**6, output_tokens=10**6, per=0.3)  # a request every 0.3 s
    limiter = RateLimiter(limits, poll_interval=0.02)
    keel = otel.client(Emulator(), limiter=limiter)
    limiter.acquire(Reservation(MODEL, 10, 20)).release()  # someone else's request, just made
    keel.messages.create(model=MODEL, max_tokens=20, messages=ask("x"))
    [span] = otel.finished()
    assert 0.2 < keel_attributes(span)["keel.rate_limit.wait_s"] < 5


def test_telemetry_false_adds_nothing_to_the_span_and_records_no_metric(otel: Otel) -> None:
    keel = otel.client(Emulator(), telemetry=False)
    keel.messages.create(model=MODEL, max_tokens=20, messages=ask("x"))
    [span] = otel.finished()
    assert keel_attributes(span) == {}
    assert otel.points("gen_ai.client.operation.duration") == []


def test_without_the_sdks_span_keel_leaves_the_callers_span_alone(otel: Otel) -> None:
    keel = otel.client(Emulator(), sdk_traces=False)  # the SDK's own switch: no span of its own
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request"):
        keel.messages.create(model=MODEL, max_tokens=20, messages=ask("x"))
    [app] = otel.spans.get_finished_spans()
    assert app.name == "handle request" and keel_attributes(app) == {}
    assert len(otel.points("gen_ai.client.operation.duration")) == 1  # the metrics do not depend on spans


GLOBAL_PROVIDER_SCRIPT = """
import keel
from keel.emulator import Emulator, client
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

claude = keel.Client(client(Emulator()))  # telemetry=True: the global meter provider, none configured yet
ask = {"model": "claude-sonnet-5-5", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
claude.messages.create(**ask)  # nothing to record to
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
claude.messages.create(**ask)
data = reader.get_metrics_data()
print(sum(p.count for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
          if m.name == "gen_ai.client.operation.duration" for p in m.data.data_points))
"""


def test_a_global_meter_provider_set_after_the_client_was_made_gets_the_calls_from_then_on() -> None:
    # the global provider can be set once per process: a process of its own
    run = subprocess.run([sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["1"]
