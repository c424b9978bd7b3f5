"""keel: production habits for the Claude Messages API, on top of the official `anthropic` SDK.

`Client` / `AsyncClient` wrap the SDK's clients: classified retries, request_id + usage + cost records on
every response, stop_reason outcomes, delivery modes, resilient streams. The emulator (`keel.emulator`)
lets everything run offline; `keel.testing` is its pytest plugin.
"""

from keel.calls import DeadlineExceeded
from keel.client import AsyncClient, CallFailed, Client, Refused, Reply
from keel.emulator import Emulator, EmulatorConfig, Scenario, load_scenario
from keel.errors import ERROR_TABLE, Action, ErrorClass, classify, classify_exception
from keel.modes import ModeChoice, choose_mode
from keel.policy import BACKGROUND, INTERACTIVE, RetryPolicy
from keel.pricing import ModelPrice, PriceTable, load_prices
from keel.records import AttemptRecord, CallRecord, JsonFormatter, Recorder, read_records
from keel.stop import (
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
from keel.streaming import AsyncResilientStream, ResilientStream, StreamInterrupted
from keel.tools import AtMostOnce, Execution, ToolOutcomeUnknown, ToolWaitTimeout, at_most_once, tool_result

__version__ = "0.1.0"

__all__ = [
    "BACKGROUND",
    "ERROR_TABLE",
    "INTERACTIVE",
    "Action",
    "AsyncClient",
    "AsyncResilientStream",
    "AtMostOnce",
    "AttemptRecord",
    "CallFailed",
    "CallRecord",
    "Client",
    "ContextWindowExceeded",
    "DeadlineExceeded",
    "Emulator",
    "EmulatorConfig",
    "EndTurn",
    "ErrorClass",
    "Execution",
    "Interrupted",
    "JsonFormatter",
    "MaxTokens",
    "ModeChoice",
    "ModelPrice",
    "Outcome",
    "PauseTurn",
    "PriceTable",
    "Recorder",
    "Refusal",
    "Refused",
    "Reply",
    "ResilientStream",
    "RetryPolicy",
    "Scenario",
    "StopSequence",
    "StreamInterrupted",
    "ToolOutcomeUnknown",
    "ToolUse",
    "ToolWaitTimeout",
    "UnknownStop",
    "__version__",
    "at_most_once",
    "choose_mode",
    "classify",
    "classify_exception",
    "load_prices",
    "load_scenario",
    "outcome_of",
    "read_records",
    "tool_result",
]
