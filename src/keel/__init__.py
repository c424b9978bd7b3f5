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
- records: `AttemptRecord`, `CallRecord`, `Usage`, `Recorder`, `JsonlSink`, `DeferredCallRecord`, `JsonFormatter`,
  `read_records`;
- prices: `PriceTable`, `ModelPrice`, `CostBreakdown`, `load_prices`;
- budgets: `Budget`, `Hold`, `CostEstimate`, `estimate_cost`.

Beside it: `keel.tools` (at-most-once tools), `keel.batch` (the Message Batches runner), `keel.bulk` (bulk
real-time runs: `keel run`; `AsyncClient.map` is on the client), `keel.ratelimit` (the client-side rate limiter),
`keel.emulator` (the local emulator of the API, not imported by `import keel`) and `keel.testing` (its pytest
plugin).
Modules whose names start with `_` are internal and may change.
"""

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
from keel._usage import Usage

__version__ = "0.1.0"

__all__ = [
    "BACKGROUND",
    "ERROR_TABLE",
    "INTERACTIVE",
    "AcquireTimeout",
    "Action",
    "AmbiguousSubmission",
    "AsyncClient",
    "AsyncResilientStream",
    "AtMostOnceError",
    "AttemptRecord",
    "Budget",
    "BudgetExceeded",
    "CallFailed",
    "CallRecord",
    "Client",
    "ConfigError",
    "ContextWindowExceeded",
    "CostBreakdown",
    "CostEstimate",
    "DeadlineExceeded",
    "DeferredCallRecord",
    "EndTurn",
    "ErrorClass",
    "ForeignResults",
    "Hold",
    "Interrupted",
    "JsonFormatter",
    "JsonlSink",
    "KeelError",
    "LimitExceedsCapacity",
    "LimiterError",
    "LimiterUnavailable",
    "MaxTokens",
    "Mode",
    "ModeChoice",
    "ModelPrice",
    "Outcome",
    "PauseTurn",
    "PriceDataError",
    "PriceTable",
    "ProxyConfigError",
    "Recorder",
    "Refusal",
    "Refused",
    "Reply",
    "ResilientStream",
    "RetryPolicy",
    "StopSequence",
    "StoreUnavailable",
    "StreamInterrupted",
    "ToolOutcomeUnknown",
    "ToolReplayedError",
    "ToolResultNotSerializable",
    "ToolUse",
    "ToolWaitTimeout",
    "UnknownStop",
    "UnpricedModel",
    "Usage",
    "__version__",
    "choose_mode",
    "classify",
    "classify_exception",
    "estimate_cost",
    "load_prices",
    "outcome_of",
    "read_records",
]
