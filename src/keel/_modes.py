"""Choosing a delivery mode: stream, standard or batch, with the reason.

The lesson's rule: someone watching tokens arrive, or a long generation → stream. Bulk work nobody waits
for, that can take up to 24 hours → batch (50% cheaper, most batches done within an hour). Short calls
where nobody watches tokens → standard. Anything that may run past ~10 minutes must stream or batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["standard", "stream", "batch"]
"""How a request is delivered: the one mode type of keel (choose_mode's answer, a call record's `mode`)."""

# The SDK refuses a non-streaming call whose max_tokens could take over 10 minutes at its assumed
# 128,000 tokens per hour: 600 s * 128_000 / 3_600 s. (anthropic._base_client._calculate_nonstreaming_timeout)
NONSTREAMING_MAX_TOKENS = 21_333
LONG_SECONDS = 600.0
BATCH_MIN_REQUESTS = 2
BATCH_WINDOW_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class ModeChoice:
    """`choose_mode`'s answer.

    Attributes:
        mode: "stream", "standard" or "batch".
        reason: why, in a sentence.
    """

    mode: Mode
    reason: str

    def __str__(self) -> str:
        return f"{self.mode}: {self.reason}"


def choose_mode(
    *,
    watching: bool = False,
    waiting: bool = True,
    max_tokens: int | None = None,
    expected_seconds: float | None = None,
    requests: int = 1,
    can_wait_seconds: float | None = None,
) -> ModeChoice:
    """The delivery mode for a piece of work, and why.

    watching: a person sees the answer appear (a chat UI). waiting: someone or something blocks on the
    result (a request handler); False for jobs. requests: how many similar requests this work has.
    can_wait_seconds: how long results may take (batches can take up to 24 h; None: as long as needed
    when nobody waits).
    """
    long_generation = (max_tokens or 0) > NONSTREAMING_MAX_TOKENS or (expected_seconds or 0) > LONG_SECONDS
    window = BATCH_WINDOW_SECONDS if can_wait_seconds is None else can_wait_seconds  # read only when nobody waits
    if watching:
        return ModeChoice("stream", "someone is watching the answer arrive: stream it token by token")
    if not waiting and requests >= BATCH_MIN_REQUESTS and window >= 3600:
        return ModeChoice(
            "batch",
            f"{requests:,} requests nobody waits for: a Message Batch costs 50% less and most finish within an hour",
        )
    if long_generation:
        return ModeChoice(
            "stream",
            "a long generation (over ~10 minutes possible): a non-streaming call would time out, so stream it",
        )
    if waiting:
        return ModeChoice("standard", "a short call someone waits for but nobody watches: a standard call is simplest")
    if requests >= BATCH_MIN_REQUESTS:
        return ModeChoice(
            "standard",
            f"{requests:,} requests due within {window:,.0f} s: too soon for a batch, which may take up to 24 h; "
            "standard calls, paced (keel run)",
        )
    return ModeChoice("standard", "a single short background call: a standard call (batch only pays for bulk work)")


def call_mode(requested: Mode | Literal["auto"], params: Mapping[str, Any]) -> Mode:
    """The mode a `messages.create` call is made in: "auto" streams underneath when max_tokens could trip the
    SDK's 10-minute guard; "batch" is not a mode of a single call (use `keel.batch`)."""
    if requested == "auto":
        return "stream" if int(params.get("max_tokens", 0)) > NONSTREAMING_MAX_TOKENS else "standard"
    if requested not in ("standard", "stream"):
        raise ValueError(f"mode: expected 'standard', 'stream' or 'auto' for a call, got {requested!r}")
    return requested
