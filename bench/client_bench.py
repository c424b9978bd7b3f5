"""keel.Client overhead over the bare SDK, measured side by side in one run on one in-process emulator.

Both sides use the same `keel.emulator.Emulator` and the same in-process SDK client
(`keel.emulator.client(emulator)`, default `max_retries`); keel wraps that very client
(`keel.Client(sdk, records=<tmp>/records.jsonl)`), so the difference is keel's own per-call work: the
attempt middleware, the call state, the price lookup and two JSONL records per call.

1. Sequential non-streaming calls: `sdk.messages.create(...)` against `keel.messages.create(...)` with the
   same parameters. Reported as µs per call; target: keel/raw <= 1.05.
2. A streamed answer of 200 words (`[[keel:words=200]]`): `with ....messages.stream(...) as s: for text in
   s.text_stream: ...` on both sides. Time to first token (until the first text arrives) and total time
   (until the `with` block has exited); targets: keel/raw <= 1.05 for each.

The two sides alternate call by call (raw, keel, keel, raw, ...) after a warm-up; each side's figure in a
round is the median over all its calls, the round's ratio is keel median / raw median, and the verdict is the
median of the rounds' ratios, so a burst of background load on the 2 cores rarely decides it. The `keel`
logger is left unconfigured (records go to the JSONL file only), as in a service that reads the file.

Run: `.venv/bin/python bench/client_bench.py` (`--help` for the knobs; `--strict` exits 1 on a FAIL).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
from targets import add_arguments, at_most, finish, print_verdicts

import keel
import keel.emulator

MODEL = "claude-haiku-5-5"
TARGET = 1.05  # keel/raw, at most, for every measure
CREATE_PARAMS: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Say something short."}],
}


def stream_params(words: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": f"Tell me a story. [[keel:words={words}]]"}],
    }


# --- one measured operation ----------------------------------------------------------------------


def raw_create(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(**CREATE_PARAMS)
    assert message.content, "empty response"


def keel_create(client: keel.Client) -> None:
    reply = client.messages.create(**CREATE_PARAMS)
    assert reply.message.content, "empty response"


def timed_create(create: Callable[[], None]) -> float:
    """Seconds for one call."""
    start = time.perf_counter()
    create()
    return time.perf_counter() - start


def timed_stream(open_stream: Callable[[], AbstractContextManager[Any]]) -> tuple[float, float, int]:
    """(seconds to the first text, seconds until the `with` block has exited, texts) for one stream."""
    start = time.perf_counter()
    with open_stream() as stream:
        texts = iter(stream.text_stream)
        next(texts)
        first = time.perf_counter()
        count = 1
        for _ in texts:
            count += 1
    return first - start, time.perf_counter() - start, count


# --- rounds and figures --------------------------------------------------------------------------


@dataclass
class Measure:
    """One measure (e.g. stream TTFT) for both sides: per round, the median of each side's samples."""

    name: str
    unit: str
    scale: float  # seconds -> unit
    raw: list[float] = field(default_factory=list)
    keel: list[float] = field(default_factory=list)
    mean_ratios: list[float] = field(default_factory=list)  # per round: keel mean / raw mean

    def add_round(self, raw: list[float], keel: list[float]) -> None:
        self.raw.append(statistics.median(raw) * self.scale)
        self.keel.append(statistics.median(keel) * self.scale)
        self.mean_ratios.append(statistics.fmean(keel) / statistics.fmean(raw))

    def ratios(self) -> list[float]:
        return [k / r for r, k in zip(self.raw, self.keel, strict=True)]

    @property
    def mean_ratio(self) -> float:
        """The median round's ratio of means: what a call costs on average, rare slow calls included."""
        return statistics.median(self.mean_ratios)

    @property
    def ratio(self) -> float:
        """The median round's ratio: what the verdict is on."""
        return statistics.median(self.ratios())

    @property
    def best(self) -> float:
        return min(self.ratios())


def sides(n: int) -> tuple[int, int]:
    """ABBA order: raw first on even pairs, keel first on odd ones, so neither side always runs second."""
    return (0, 1) if n % 2 == 0 else (1, 0)


def create_round(measure: Measure, ops: tuple[Callable[[], None], Callable[[], None]], calls: int) -> None:
    samples: tuple[list[float], list[float]] = ([], [])
    gc.collect()
    for n in range(calls):
        for side in sides(n):
            samples[side].append(timed_create(ops[side]))
    measure.add_round(*samples)


def stream_round(
    ttft: Measure,
    total: Measure,
    ops: tuple[Callable[[], AbstractContextManager[Any]], Callable[[], AbstractContextManager[Any]]],
    streams: int,
    expected: int,
) -> None:
    firsts: tuple[list[float], list[float]] = ([], [])
    totals: tuple[list[float], list[float]] = ([], [])
    gc.collect()
    for n in range(streams):
        for side in sides(n):
            first, whole, count = timed_stream(ops[side])
            assert count == expected, f"expected {expected} texts, got {count}"
            firsts[side].append(first)
            totals[side].append(whole)
    ttft.add_round(*firsts)
    total.add_round(*totals)


def count_texts(sdk: anthropic.Anthropic, params: dict[str, Any]) -> int:
    with sdk.messages.stream(**params) as stream:
        return sum(1 for _ in stream.text_stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel.Client overhead over the bare SDK, on the in-process emulator.")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the verdict is the median round (default 3)")
    parser.add_argument("--calls", type=int, default=2000, help="create calls per side per round (default 2000)")
    parser.add_argument("--streams", type=int, default=150, help="streams per side per round (default 150)")
    parser.add_argument("--words", type=int, default=200, help="words per streamed answer (default 200)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls per side; a tenth as streams")
    add_arguments(parser)
    args = parser.parse_args(argv)

    emulator = keel.emulator.Emulator()
    params = stream_params(args.words)
    create = Measure("create", "µs/call", 1e6)
    ttft = Measure("stream, first token", "µs", 1e6)
    total = Measure("stream, total", "ms", 1e3)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, keel.emulator.client(emulator) as sdk:
        records = Path(tmp) / "records.jsonl"
        client = keel.Client(sdk, records=records)
        expected = count_texts(sdk, params)  # every stream of both sides must deliver as many texts
        creates: tuple[Callable[[], None], Callable[[], None]] = (lambda: raw_create(sdk), lambda: keel_create(client))
        streams: tuple[Callable[[], AbstractContextManager[Any]], Callable[[], AbstractContextManager[Any]]] = (
            lambda: sdk.messages.stream(**params),
            lambda: client.messages.stream(**params),
        )
        for _ in range(args.warmup):
            for op in creates:
                op()
        for _ in range(max(1, args.warmup // 10)):
            for open_stream in streams:
                timed_stream(open_stream)
        for _ in range(args.rounds):
            create_round(create, creates, args.calls)
            stream_round(ttft, total, streams, args.streams, expected)
        client.close()
        record_lines = sum(1 for _ in records.open(encoding="utf-8"))
    elapsed = time.perf_counter() - began

    print(
        f"keel client bench: Python {platform.python_version()}, anthropic {anthropic.__version__}, "
        f"{os.cpu_count()} cores; {args.rounds} rounds of {args.calls} create calls and {args.streams} streams "
        f"({expected} texts) per side, alternating; {record_lines} records written; {elapsed:.1f} s"
    )
    print()
    print("figures: median over the rounds of each side's per-round median; ratio: keel/raw, the median round's")
    print("mean ratio: the same over each side's per-round mean (rare slow calls, e.g. a records flush, included)")
    print(f"{'measure':<28}{'raw':>10}{'keel':>10}{'ratio':>8}{'best':>7}{'mean ratio':>12}   ratio per round")
    for measure in (create, ttft, total):
        spec = ".2f" if measure.unit == "ms" else ".0f"
        label = f"{measure.name} ({measure.unit})"
        print(
            f"{label:<28}{statistics.median(measure.raw):>10{spec}}{statistics.median(measure.keel):>10{spec}}"
            f"{measure.ratio:>8.3f}{measure.best:>7.3f}{measure.mean_ratio:>12.3f}   "
            f"{' '.join(f'{r:.3f}' for r in measure.ratios())}"
        )
    print()
    results = [at_most(f"{measure.name} keel/raw", measure.ratio, TARGET) for measure in (create, ttft, total)]
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
