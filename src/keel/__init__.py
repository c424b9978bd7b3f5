"""keel: production habits for the Claude Messages API, on top of the official `anthropic` SDK.

This module is keel's public surface, by concept:

- the client: `Client`, `AsyncClient`, their `Reply`, `ResilientStream` / `AsyncResilientStream`;
- stop_reason outcomes to match on: `Outcome` and its kinds (`EndTurn` ... `UnknownStop`), `outcome_of`;
- delivery modes: `Mode`, `choose_mode`, `ModeChoice`;
- retrying: `RetryPolicy`, `INTERACTIVE`, `BACKGROUND`; the error map: `ERROR_TABLE`, `ErrorClass`, `Action`,
  `classify`, `classify_exception`;
- exceptions, all under `KeelError`: `CallFailed`, `Refused`, `StreamInterrupted`, `DeadlineExceeded`,
  `PriceDataError`, the at-most-once tool errors (`AtMostOnceError` ...), the batch runner's
  (`AmbiguousSubmission`, `ForeignResults`), the shared stores' (`StoreUnavailable`, `ConfigError`), the rate
  limiter's (`LimiterError`: `LimitExceedsCapacity`, `AcquireTimeout`, `LimiterUnavailable`), budgets'
  (`BudgetExceeded`, `UnpricedModel`);
- telemetry: `Telemetry` (OpenTelemetry attributes and metrics; on by default, see docs/telemetry.md);
- records: `AttemptRecord`, `CallRecord`, `Usage`, `Recorder`, `JsonlSink`, `DeferredCallRecord`, `JsonFormatter`,
  `read_records`;
- prices: `PriceTable`, `ModelPrice`, `CostBreakdown`, `load_prices`;
- budgets: `Budget`, `Hold`, `CostEstimate`, `estimate_cost`.

Beside it: `keel.tools` (at-most-once tools), `keel.batch` (the Message Batches runner), `keel.bulk` (bulk
real-time runs: `keel run`; `AsyncClient.map` is on the client), `keel.ratelimit` (the client-side rate limiter),
`keel.emulator` (the local emulator of the API, not imported by `import keel`) and `keel.testing` (its pytest
plugin).
Modules whose names start with `_` are internal and may change.

`import keel` is light: each public name is imported from its module when first used (the SDK among others loads
then), so `import keel`, and `keel --help`, do not pay for what they do not touch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel._budget import Budget, CostEstimate, Hold, estimate_cost
    from keel._call import Reply
    from keel._client import AsyncClient, Client
    from keel._error_map import ERROR_TABLE, Action, ErrorClass, classify, classify_exception
    from keel._exceptions import (
        AcquireTimeout,
        AmbiguousSubmission,
        AtMostOnceError,
        BudgetExceeded,
        CallFailed,
        ConfigError,
        DeadlineExceeded,
        ForeignResults,
        KeelError,
        LimiterError,
        LimiterUnavailable,
        LimitExceedsCapacity,
        PriceDataError,
        ProxyConfigError,
        Refused,
        StoreUnavailable,
        StreamInterrupted,
        ToolOutcomeUnknown,
        ToolReplayedError,
        ToolResultNotSerializable,
        ToolWaitTimeout,
        UnpricedModel,
    )
    from keel._modes import Mode, ModeChoice, choose_mode
    from keel._pricing import CostBreakdown, ModelPrice, PriceTable, load_prices
    from keel._records import (
        AttemptRecord,
        CallRecord,
        DeferredCallRecord,
        JsonFormatter,
        JsonlSink,
        Recorder,
        read_records,
    )
    from keel._retrying import BACKGROUND, INTERACTIVE, RetryPolicy
    from keel._stop import (
        ContextWindowExceeded,
        EndTurn,
        Interrupted,
        MaxTokens,
        Outcome,
        PauseTurn,
        Refusal,
        StopSequence,
        ToolUse,
        UnknownStop,
        outcome_of,
    )
    from keel._streaming import AsyncResilientStream, ResilientStream
    from keel._telemetry import Telemetry
    from keel._usage import Usage

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Budget": "keel._budget",
    "CostEstimate": "keel._budget",
    "Hold": "keel._budget",
    "estimate_cost": "keel._budget",
    "Reply": "keel._call",
    "AsyncClient": "keel._client",
    "Client": "keel._client",
    "ERROR_TABLE": "keel._error_map",
    "Action": "keel._error_map",
    "ErrorClass": "keel._error_map",
    "classify": "keel._error_map",
    "classify_exception": "keel._error_map",
    "AcquireTimeout": "keel._exceptions",
    "AmbiguousSubmission": "keel._exceptions",
    "AtMostOnceError": "keel._exceptions",
    "BudgetExceeded": "keel._exceptions",
    "CallFailed": "keel._exceptions",
    "ConfigError": "keel._exceptions",
    "DeadlineExceeded": "keel._exceptions",
    "ForeignResults": "keel._exceptions",
    "KeelError": "keel._exceptions",
    "LimiterError": "keel._exceptions",
    "LimiterUnavailable": "keel._exceptions",
    "LimitExceedsCapacity": "keel._exceptions",
    "PriceDataError": "keel._exceptions",
    "ProxyConfigError": "keel._exceptions",
    "Refused": "keel._exceptions",
    "StoreUnavailable": "keel._exceptions",
    "StreamInterrupted": "keel._exceptions",
    "ToolOutcomeUnknown": "keel._exceptions",
    "ToolReplayedError": "keel._exceptions",
    "ToolResultNotSerializable": "keel._exceptions",
    "ToolWaitTimeout": "keel._exceptions",
    "UnpricedModel": "keel._exceptions",
    "Mode": "keel._modes",
    "ModeChoice": "keel._modes",
    "choose_mode": "keel._modes",
    "CostBreakdown": "keel._pricing",
    "ModelPrice": "keel._pricing",
    "PriceTable": "keel._pricing",
    "load_prices": "keel._pricing",
    "AttemptRecord": "keel._records",
    "CallRecord": "keel._records",
    "DeferredCallRecord": "keel._records",
    "JsonFormatter": "keel._records",
    "JsonlSink": "keel._records",
    "Recorder": "keel._records",
    "read_records": "keel._records",
    "BACKGROUND": "keel._retrying",
    "INTERACTIVE": "keel._retrying",
    "RetryPolicy": "keel._retrying",
    "ContextWindowExceeded": "keel._stop",
    "EndTurn": "keel._stop",
    "Interrupted": "keel._stop",
    "MaxTokens": "keel._stop",
    "Outcome": "keel._stop",
    "PauseTurn": "keel._stop",
    "Refusal": "keel._stop",
    "StopSequence": "keel._stop",
    "ToolUse": "keel._stop",
    "UnknownStop": "keel._stop",
    "outcome_of": "keel._stop",
    "AsyncResilientStream": "keel._streaming",
    "ResilientStream": "keel._streaming",
    "Telemetry": "keel._telemetry",
    "Usage": "keel._usage",
}
"""Each public name and the module it is defined in, imported when the name is first used."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
