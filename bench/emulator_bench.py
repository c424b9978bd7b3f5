"""Emulator overhead against a minimal Starlette app, measured side by side in one run.

1. Sequential non-streaming `messages.create` calls with the official SDK (`max_retries=0`) against a
   minimal fixed-response app and the keel emulator, over loopback (uvicorn in a thread) and in-process
   (`EmulatorTransport` for both apps). Reported as ms per call; target: emulator/minimal <= 1.3.
2. Streaming throughput to a plain HTTP line reader (`httpx2` `iter_lines`, not the SDK) over loopback:
   SSE events per second from a minimal app yielding fixed `content_block_delta` events and from the
   emulator streaming a 5000-token answer. Target: emulator/minimal >= 0.7.

After a warm-up, each round runs both sides of a workload alternately in small chunks (10 calls, or one stream);
the figures are the best round of each side, the ratio is the median of emulator/minimal over all the back-to-back
chunk pairs, which keeps bursts of background load (other processes on the 2 cores) out of the verdict.

Run: `.venv/bin/python bench/emulator_bench.py` (`make bench` runs it with the others); `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from targets import add_arguments, at_least, at_most, finish, print_verdicts

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorTransport
from keel.emulator.server import BackgroundServer

MODEL = "claude-haiku-5-5"
IN_PROCESS_BASE_URL = "http://bench.keel.invalid"
CALL_RATIO_TARGET = 1.3  # emulator ms/call over minimal ms/call: at most
STREAM_RATIO_TARGET = 0.7  # emulator events/s over minimal events/s: at least

# A valid Message, about the size of the emulator's default answer (12 to 40 tokens of text).
FIXED_MESSAGE = json.dumps(
    {
        "model": MODEL,
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "The keel emulator answers with deterministic text so tests can rely on it."}
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 16,
            "service_tier": "standard",
        },
    },
    separators=(",", ":"),
).encode()
FIXED_HEADERS = {"request-id": "req_011CBenchMinimalFixedId01"}
DELTA_EVENT = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" deterministic"}}\n\n'
)
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"


# --- the minimal apps ----------------------------------------------------------------------------


def minimal_message_app() -> Starlette:
    """A single POST /v1/messages route answering a fixed Message with a request-id header."""

    async def messages(request: Request) -> Response:
        await request.body()
        return Response(FIXED_MESSAGE, media_type="application/json", headers=FIXED_HEADERS)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def minimal_stream_app(events: int) -> Starlette:
    """A single POST /v1/messages route streaming `events` fixed SSE events, one per yield."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(events):
            yield DELTA_EVENT

    async def messages(request: Request) -> Response:
        await request.body()
        return StreamingResponse(body(), media_type=SSE_MEDIA_TYPE, headers=FIXED_HEADERS)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


# --- clients and workloads -----------------------------------------------------------------------


def loopback_sdk(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=DEFAULT_API_KEY, base_url=base_url, max_retries=0)


def in_process_sdk(app: Any) -> anthropic.Anthropic:
    http_client = httpx2.Client(transport=EmulatorTransport(app), base_url=IN_PROCESS_BASE_URL)
    return anthropic.Anthropic(
        api_key=DEFAULT_API_KEY, base_url=IN_PROCESS_BASE_URL, http_client=http_client, max_retries=0
    )


def call_once(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Say something short."}]
    )
    assert message.content, "empty response"


def timed_calls(client: anthropic.Anthropic, calls: int) -> float:
    """Seconds for `calls` sequential calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call_once(client)
    return time.perf_counter() - start


def stream_body(words: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64000,
        "stream": True,
        "messages": [{"role": "user", "content": f"Tell me a long story. [[keel:words={words}]]"}],
    }


STREAM_HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}


def read_stream(client: httpx2.Client, body: dict[str, Any]) -> tuple[int, int, float]:
    """POST and read the SSE response line by line; return (events, deltas, seconds)."""
    events = deltas = 0
    start = time.perf_counter()
    with client.stream("POST", "/v1/messages", json=body, headers=STREAM_HEADERS) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                events += 1
                if line == "event: content_block_delta":
                    deltas += 1
    return events, deltas, time.perf_counter() - start


# --- running and reporting -----------------------------------------------------------------------


@dataclass
class Pair:
    """Minimal app against emulator on one workload, measured in back-to-back (minimal, emulator) chunks."""

    name: str
    unit: str
    higher_is_better: bool
    minimal: list[float] = field(default_factory=list)  # one figure per round
    emulator: list[float] = field(default_factory=list)
    chunk_ratios: list[list[float]] = field(default_factory=list)  # per round: emulator/minimal of each chunk

    def best(self, figures: list[float]) -> float:
        return max(figures) if self.higher_is_better else min(figures)

    def add_round(self, minimal: list[float], emulator: list[float]) -> None:
        """Record a round from its chunk figures (ms per call, or events per second)."""
        self.minimal.append(statistics.fmean(minimal))
        self.emulator.append(statistics.fmean(emulator))
        self.chunk_ratios.append([e / m for m, e in zip(minimal, emulator, strict=True)])

    def round_ratios(self) -> list[float]:
        return [statistics.median(ratios) for ratios in self.chunk_ratios]

    @property
    def ratio(self) -> float:
        """Median over all chunk pairs: each pair ran back to back, so a burst of background load rarely
        hits one side only, and the median discards the pairs where it did."""
        return statistics.median(r for ratios in self.chunk_ratios for r in ratios)


def call_round(pair: Pair, minimal: anthropic.Anthropic, emulator: anthropic.Anthropic, calls: int, chunk: int) -> None:
    """`calls` calls to each side, alternating sides every `chunk` calls."""
    figures: tuple[list[float], list[float]] = ([], [])
    clients = (minimal, emulator)
    gc.collect()
    for n in range(max(1, calls // chunk)):
        for side in (0, 1) if n % 2 == 0 else (1, 0):
            figures[side].append(timed_calls(clients[side], chunk) * 1000 / chunk)
    pair.add_round(*figures)


def stream_round(
    pair: Pair, minimal: httpx2.Client, emulator: httpx2.Client, body: dict[str, Any], streams: int, words: int
) -> None:
    """`streams` streams from each side, alternating sides every stream."""
    figures: tuple[list[float], list[float]] = ([], [])
    readers = (minimal, emulator)
    gc.collect()
    for n in range(streams):
        for side in (0, 1) if n % 2 == 0 else (1, 0):
            events, deltas, seconds = read_stream(readers[side], body)
            assert deltas >= words, f"expected at least {words} content_block_delta events, got {deltas}"
            figures[side].append(events / seconds)
    pair.add_round(*figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emulator overhead against a minimal Starlette app.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best of each side is kept (default 5)")
    parser.add_argument("--calls", type=int, default=300, help="non-streaming calls per side per round (default 300)")
    parser.add_argument("--chunk", type=int, default=10, help="calls per side before switching sides (default 10)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per configuration (default 50)")
    parser.add_argument("--words", type=int, default=5000, help="delta events per stream (default 5000)")
    parser.add_argument("--streams", type=int, default=6, help="streams per side per round (default 6)")
    add_arguments(parser)
    args = parser.parse_args(argv)

    emulator = Emulator()
    body = stream_body(args.words)
    loopback = Pair("non-streaming, loopback", "ms/call", higher_is_better=False)
    in_process = Pair("non-streaming, in-process", "ms/call", higher_is_better=False)
    streaming = Pair("streaming, loopback", "events/s", higher_is_better=True)
    began = time.perf_counter()
    with ExitStack() as stack:
        minimal_server = stack.enter_context(BackgroundServer(minimal_message_app()))
        emulator_server = stack.enter_context(BackgroundServer(emulator))
        minimal_stream_server = stack.enter_context(BackgroundServer(minimal_stream_app(args.words)))
        min_loop = stack.enter_context(loopback_sdk(minimal_server.base_url))
        emu_loop = stack.enter_context(loopback_sdk(emulator_server.base_url))
        min_inproc = stack.enter_context(in_process_sdk(minimal_message_app()))
        emu_inproc = stack.enter_context(in_process_sdk(emulator))
        min_reader = stack.enter_context(httpx2.Client(base_url=minimal_stream_server.base_url, timeout=60))
        emu_reader = stack.enter_context(httpx2.Client(base_url=emulator_server.base_url, timeout=60))

        for client in (min_loop, emu_loop, min_inproc, emu_inproc):
            for _ in range(args.warmup):
                call_once(client)
        for reader in (min_reader, emu_reader):
            read_stream(reader, body)

        for _ in range(args.rounds):
            call_round(loopback, min_loop, emu_loop, args.calls, args.chunk)
            call_round(in_process, min_inproc, emu_inproc, args.calls, args.chunk)
            stream_round(streaming, min_reader, emu_reader, body, args.streams, args.words)
    elapsed = time.perf_counter() - began

    print(
        f"keel emulator bench: Python {platform.python_version()}, {os.cpu_count()} cores; best of {args.rounds} "
        f"rounds ({args.calls} calls and {args.streams} streams of {args.words} tokens per side per round); "
        f"{elapsed:.1f} s"
    )
    print()
    print("figures: best round of each side; ratio: emulator/minimal, median of the back-to-back chunk pairs")
    print(f"{'workload':<36}{'minimal':>10}{'emulator':>10}{'ratio':>7}   ratio per round")
    for pair in (loopback, in_process, streaming):
        spec = ",.0f" if pair.higher_is_better else ".3f"
        label = f"{pair.name} ({pair.unit})"
        print(
            f"{label:<36}{pair.best(pair.minimal):>10{spec}}{pair.best(pair.emulator):>10{spec}}"
            f"{pair.ratio:>7.2f}   {' '.join(f'{r:.2f}' for r in pair.round_ratios())}"
        )
    print()
    results = [
        at_most("non-streaming, loopback emulator/minimal", loopback.ratio, CALL_RATIO_TARGET, digits=2),
        at_most("non-streaming, in-process emulator/minimal", in_process.ratio, CALL_RATIO_TARGET, digits=2),
        at_least("streaming emulator/minimal", streaming.ratio, STREAM_RATIO_TARGET, digits=2),
    ]
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
