"""Retries made visible: one log record per retry about to wait, and one when a call that retried succeeds.

Both go to the logger `keel.retrying` at INFO (nothing is built while it is not enabled), as a line a person reads
and, under the record's `keel` attribute, as fields:

    retrying: overloaded (request_id req_011C…), attempt 3 failed, next in 2.1 s
    recovered: call_… succeeded on attempt 5 (request_id req_011C…)

keel's own rounds are noticed from tenacity's `before_sleep`. The SDK's retries inside a round are the SDK's to
wait for: `sdk_retries_noticed()` reads the wait the SDK itself logs before each one (its `anthropic._base_client`
logger, at INFO), for as long as a command wants them shown. A notice names the attempt the call in progress
(`CURRENT_CALL`) recorded last, so it is written in the context of that call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from tenacity import RetryCallState

from ._call import CURRENT_CALL, Call
from ._error_map import classify_exception
from ._retrying import RetryPolicy, background_rounds

logger = logging.getLogger("keel.retrying")

SDK_LOGGER = "anthropic._base_client"
"""The SDK's logger that says, at INFO, how long it waits before each of its retries."""
_SDK_RETRY_MESSAGE = "Retrying request to %s in %f seconds"


def retrying(call: Call | None, wait_seconds: float, error_class: str | None = None) -> None:
    """Notice that `call` waits `wait_seconds` before its next attempt, after the attempt it recorded last, for
    `error_class` (by default that attempt's: a stream can break after its attempt's 200)."""
    if call is None or not call.attempts or not logger.isEnabledFor(logging.INFO):
        return
    last = call.attempts[-1]
    error_class = error_class or last.error_class
    cause = f"request_id {last.request_id}" if last.request_id else "no response"
    fields: dict[str, Any] = {
        "event": "retrying",
        "call_id": call.call_id,
        "error_class": error_class,
        "status": last.status,
        "request_id": last.request_id,
        "attempt": last.attempt,
        "wait_seconds": round(wait_seconds, 3),
    }
    message = f"retrying: {error_class} ({cause}), attempt {last.attempt} failed, next in {wait_seconds:.1f} s"
    logger.info(message, extra={"keel": fields})


def recovered(call: Call) -> None:
    """Notice that `call`, which retried, succeeded."""
    if not call.attempts or not logger.isEnabledFor(logging.INFO):
        return
    last = call.attempts[-1]
    fields = {"event": "recovered", "call_id": call.call_id, "request_id": last.request_id, "attempt": last.attempt}
    message = f"recovered: {call.call_id} succeeded on attempt {last.attempt} (request_id {last.request_id})"
    logger.info(message, extra={"keel": fields})


def before_round_sleep(state: RetryCallState) -> None:
    """tenacity's `before_sleep` for keel's rounds: the wait it chose, and the error that ended the round, noticed for
    the call in progress."""
    action, outcome = state.next_action, state.outcome
    error = outcome.exception() if outcome is not None else None
    error_class = classify_exception(error).name if error is not None else None
    retrying(CURRENT_CALL.get(), action.sleep if action is not None else 0.0, error_class)


def noticed_rounds(policy: RetryPolicy) -> dict[str, Any] | None:
    """`background_rounds(policy)`, each wait between rounds noticed (`before_round_sleep`): keel's rounds around a
    `create` and around a stream that cannot open alike."""
    rounds = background_rounds(policy)
    if rounds is not None:
        rounds["before_sleep"] = before_round_sleep
    return rounds


class _SdkRetries(logging.Handler):
    """The SDK's "Retrying request to URL in N seconds", noticed for the keel call in progress."""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if record.msg == _SDK_RETRY_MESSAGE and isinstance(args, tuple) and len(args) == 2:
            wait = args[1]
            if isinstance(wait, int | float):
                retrying(CURRENT_CALL.get(), float(wait))


@contextmanager
def handled_at_info(logger_name: str, handler: logging.Handler) -> Iterator[None]:
    """`handler` on the logger while the block runs, and the logger set to INFO for the time if it was above it (its
    records still reach whatever handlers the application gave it)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def sdk_retries_noticed() -> AbstractContextManager[None]:
    """While inside, the SDK's own retries are noticed too."""
    return handled_at_info(SDK_LOGGER, _SdkRetries(logging.INFO))
