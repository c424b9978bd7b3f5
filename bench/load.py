"""Many concurrent calls against the emulator in its own process, and what its access log saw: shared by the
benchmarks of many calls at once (goodput.py, shared_budget.py, client_concurrency.py).

- `drive`: N calls through an `asyncio.Semaphore`, all started at once with `asyncio.gather`, timed; failures
  counted by exception type.
- `Workload`: the request every call sends (a prompt of about `input_tokens`, an answer of exactly
  `output_tokens`), with its token counts as the emulator counts them.
- `Budget`: per-minute limits on an emulator clock that may run faster than real time, in the API's terms
  and in real time, as a scenario file (`[limits]`, and `[[limits.keys]]` for keys of their own) and as the
  `keel.ratelimit.Limits` a client limiter is configured with.
- `read_access_log` / `Tally`: the emulator's access-log file (`--access-log`), per API key.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from keel.emulator.keys import key_id
from keel.ratelimit import Limits

MODEL = "claude-haiku-5-5"
UNLIMITED = 1_000_000_000  # a per-minute limit no benchmark reaches


# --- driving calls -------------------------------------------------------------------------------------------------


@dataclass
class Drive:
    """N calls made `concurrency` at a time: the wall time from the first start to the last end, and the failures."""

    calls: int
    seconds: float
    cpu_seconds: float  # this process's CPU time meanwhile (all its threads)
    gc_seconds: float  # of which the cyclic garbage collector took this much
    gc_full: int  # full (generation 2) collections meanwhile
    failures: Counter[str] = field(default_factory=Counter)  # exception type name -> count
    probed: float = 0.0  # what else was measured over the same time, if anything (alternating.alternate_async)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def failures_text(self) -> str:
        return ", ".join(f"{count} {name}" for name, count in self.failures.most_common()) or "none"


class GcClock:
    """The time the cyclic garbage collector takes while installed (`gc.callbacks`), and its full collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.full += info["generation"] == 2

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def drive(call: Callable[[int], Awaitable[object]], calls: int, concurrency: int) -> Drive:
    """`call(0)` … `call(calls - 1)` under an `asyncio.Semaphore(concurrency)`, gathered; an exception is a failure."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> object:
        async with gate:
            return await call(n)

    with GcClock() as collector:
        started, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one(n) for n in range(calls)), return_exceptions=True)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    failures = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    return Drive(calls, seconds, cpu_seconds, collector.seconds, collector.full, failures)


# --- the request -----------------------------------------------------------------------------------------------------

FILLER = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "box")


@dataclass(frozen=True)
class Workload:
    """Call n sends `params(n)`: a prompt of about `input_words` words asking for exactly `output_tokens` tokens."""

    input_words: int
    output_tokens: int
    max_tokens: int

    def prompt(self, n: int) -> str:
        words = (FILLER[i % len(FILLER)] for i in range(self.input_words))
        return f"Request {n}: {' '.join(words)} [[keel:words={self.output_tokens}]]"

    def params(self, n: int) -> dict[str, Any]:
        messages = [{"role": "user", "content": self.prompt(n)}]
        return {"model": MODEL, "max_tokens": self.max_tokens, "messages": messages}

    def counted(self) -> tuple[int, int]:
        """(input tokens, output tokens) of one call as the emulator counts them (the same for every n), from an
        in-process emulator."""
        from keel.emulator import Emulator, client

        with client(Emulator()) as sdk:
            usage = sdk.messages.create(**self.params(1)).usage
        return usage.input_tokens, usage.output_tokens


# --- the limits ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Per-minute limits (the API's terms) on an emulator clock running `clock_speed` times as fast as real time:
    each bucket holds its per-minute limit and refills it in `window` = 60 / clock_speed real seconds."""

    rpm: int
    itpm: int
    otpm: int
    clock_speed: float

    @classmethod
    def matching(cls, rpm: int, per_call: tuple[int, int], clock_speed: float) -> Budget:
        """Token limits that bind at the same request rate as `rpm` for calls of `per_call` (input, output) tokens."""
        return cls(rpm, rpm * per_call[0], rpm * per_call[1], clock_speed)

    @property
    def window(self) -> float:
        return 60.0 / self.clock_speed

    @property
    def capacities(self) -> tuple[int, int, int]:
        return self.rpm, self.itpm, self.otpm

    def per_second(self) -> tuple[float, float, float]:
        """What each bucket refills per real second."""
        return self.rpm / self.window, self.itpm / self.window, self.otpm / self.window

    def limiter_limits(self) -> Limits:
        """The same limits for `keel.ratelimit.RateLimiter(..., window=budget.window)`."""
        return Limits(self.rpm, self.itpm, self.otpm, per=self.window)

    def seconds_for(self, demand: tuple[int, int, int]) -> dict[str, float]:
        """Per bucket, the least real time in which `demand` (requests, input and output tokens) fits: the bucket
        starts full, so (demand - capacity) / rate, at least 0."""
        names = ("requests", "input tokens", "output tokens")
        rates = self.per_second()
        return {n: max(0.0, (d - c) / r) for n, d, c, r in zip(names, demand, self.capacities, rates, strict=True)}

    def describe(self) -> str:
        rps, ips, ops = self.per_second()
        return (
            f"{self.rpm:,} RPM / {self.itpm:,} ITPM / {self.otpm:,} OTPM on a clock {self.clock_speed:g}x as fast: "
            f"in real time {rps:,.1f} requests, {ips:,.0f} input and {ops:,.0f} output tokens a second, "
            f"each bucket holding {self.window:g} s of them"
        )

    def write_scenario(self, path: Path, keys: Mapping[str, Budget | None]) -> None:
        """A scenario file enforcing these limits, with `keys` accepted besides `--api-key`, each with the limits
        given (None: these)."""
        lines = ["[limits]", f"rpm = {self.rpm}", f"itpm = {self.itpm}", f"otpm = {self.otpm}"]
        for key, own in keys.items():
            rpm, itpm, otpm = (own or self).capacities
            lines += ["", "[[limits.keys]]", f'key = "{key}"', f"rpm = {rpm}", f"itpm = {itpm}", f"otpm = {otpm}"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


UNLIMITED_BUDGET = Budget(UNLIMITED, UNLIMITED, UNLIMITED, 1.0)


# --- the access log --------------------------------------------------------------------------------------------------


def read_access_log(path: Path) -> list[dict[str, Any]]:
    """The entries of an access-log file, `time` as epoch seconds."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        entry["time"] = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class Tally:
    """The Messages responses one API key got: how many, how many were 429s, and when the first and last were."""

    responses: int
    throttled: int
    first: float
    last: float

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.responses if self.responses else 0.0

    @classmethod
    def of(cls, entries: Iterable[Mapping[str, Any]], api_key: str) -> Tally:
        fingerprint = key_id(api_key)
        mine = [e for e in entries if e["key_id"] == fingerprint and e["path"] == "/v1/messages"]
        times = [e["time"] for e in mine] or [0.0]
        return cls(len(mine), sum(e["status"] == 429 for e in mine), min(times), max(times))
