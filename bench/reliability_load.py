"""Load: the emulator holding 500 concurrent streams and 2,000 concurrent non-streaming calls, and `keel proxy` 200
concurrent streams, all driven at once by keel's AsyncClient, with the servers' peak memory and the calls' latency.

`keel emulator serve --ttft-ms 250 --tps 40` runs in a process of its own, so that every answer takes a while (a
stream of 40 words about 1.25 s, a call of 10 words 0.5 s): all the calls of a wave are in flight together. Each
wave starts every call at once (no client-side limit: the connection pool is as large as the wave) and waits for
all of them. The waves are repeated (`--waves`): a server whose memory grew from one wave to the next by more than a
fraction of what the first wave took would not hold a long run. Then `keel proxy --upstream <the emulator>` in a
process of its own relays `--proxy-streams` streams at once, in waves likewise.

Reported per part: calls, errors, p50 / p99 latency against the floor the pacing sets (p99 near the floor: the
server served them all at once), the server's peak RSS (VmHWM) and its RSS after each wave; with the machine's load
average, since the machine may be shared.

Run: `.venv/bin/python bench/reliability_load.py` (the full figures; `tests/reliability/test_load.py` runs a small
version under `make test`, the full one under `make soak`); `--help` for the sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from emulator_process import EmulatorProcess
from proxy_bench import Server, keel_proxy, load_average, process
from targets import Result, add_arguments, at_most, finish, info, print_verdicts

import keel
from keel.emulator import DEFAULT_API_KEY

MODEL = "claude-haiku-5-5"
TTFT_MS, TPS = 250, 40
STREAM_WORDS, CALL_WORDS = 40, 10
STREAM_FLOOR = TTFT_MS / 1000 + STREAM_WORDS / TPS  # seconds a stream takes when nothing waits
CALL_FLOOR = TTFT_MS / 1000 + CALL_WORDS / TPS
GROWTH_SHARE = 0.25  # a later wave may add at most this share of the first wave's growth (or GROWTH_FLOOR_MB)
GROWTH_FLOOR_MB = 8.0
POOL = 100  # connections per client
# a connection per call, none kept alive: a busy client reads an answer seconds after the server sent it, and may
# reuse the connection just as uvicorn's 5 s keep-alive timeout closes it (a ReadError that only the SDK's retries,
# off here, would hide); what is measured is the server holding the calls, not that race
NO_RETRIES = keel.RetryPolicy("load", max_retries=0, timeout=120.0)  # an error is counted, not ridden out


def memory_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and its peak (VmRSS, VmHWM), in MB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Wave:
    """One wave: every call started at once, each one's latency (and a stream's time to its first text)."""

    latencies: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # an error's message, one per kind
    rss_after_mb: float = 0.0


@dataclass
class Part:
    """The waves against one server: what a wave sends, and what the server's memory did."""

    name: str
    stream: bool
    size: int
    floor: float
    pid: int
    rss_before_mb: float = 0.0
    peak_mb: float = 0.0
    waves: list[Wave] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the waves
    client_cpu: float = 0.0  # CPU seconds of this process (the client) meanwhile
    server_cpu: float = 0.0  # ... and of the server

    @property
    def latencies(self) -> list[float]:
        return [x for wave in self.waves for x in wave.latencies]

    @property
    def errors(self) -> Counter[str]:
        return sum((wave.errors for wave in self.waves), Counter())

    @property
    def completed(self) -> int:
        return len(self.latencies)

    def growth_mb(self) -> tuple[float, float]:
        """What the first wave added to the server's RSS, and the most any later wave added."""
        after = [wave.rss_after_mb for wave in self.waves]
        later = max((b - a for a, b in itertools.pairwise(after)), default=0.0)
        return after[0] - self.rss_before_mb, later

    def bounded(self) -> bool:
        first, later = self.growth_mb()
        return later <= max(GROWTH_SHARE * first, GROWTH_FLOOR_MB)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def clients(base_url: str, size: int) -> list[keel.AsyncClient]:
    """keel AsyncClients whose connection pools together hold a whole wave in flight at once, `POOL` connections each
    (httpcore's pool looks through all its connections for each request: one pool of 2,000 costs the client more
    CPU than the calls themselves)."""
    limits = httpx2.Limits(max_connections=POOL, max_keepalive_connections=0)
    made = []
    for _ in range(math.ceil(size / POOL)):
        sdk = anthropic.AsyncAnthropic(
            api_key=DEFAULT_API_KEY,
            base_url=base_url,
            http_client=anthropic.DefaultAsyncHttpxClient(limits=limits),
            _strict_response_validation=True,
        )
        made.append(keel.AsyncClient(sdk, policy=NO_RETRIES))
    return made


async def one_call(keel_client: keel.AsyncClient, n: int, stream: bool) -> tuple[float, float | None]:
    """A call (or a stream, read to its end): its latency, and a stream's time to its first text."""
    words = STREAM_WORDS if stream else CALL_WORDS
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": words + 10,
        "messages": [{"role": "user", "content": f"Load {n} [[keel:words={words}]]"}],
    }
    started = time.perf_counter()
    if not stream:
        reply = await keel_client.messages.create(**params)
        assert reply.message.usage.output_tokens == words, reply.message.usage
        return time.perf_counter() - started, None
    first = None
    async with keel_client.messages.stream(**params) as answer:
        pieces = 0
        async for _ in answer.text_stream:
            pieces += 1
            first = first if first is not None else time.perf_counter() - started
    assert pieces == words, pieces
    return time.perf_counter() - started, first


async def run_wave(keel_clients: list[keel.AsyncClient], part: Part) -> Wave:
    calls = (one_call(keel_clients[n % len(keel_clients)], n, part.stream) for n in range(part.size))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    wave = Wave()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            wave.errors[type(outcome).__name__] += 1
            cause = getattr(outcome, "sdk_error", None) or outcome
            cause = cause.__cause__ or cause
            wave.examples.setdefault(type(outcome).__name__, f"{str(outcome)[:200]} (cause: {cause!r:.200})")
        else:
            wave.latencies.append(outcome[0])
            if outcome[1] is not None:
                wave.firsts.append(outcome[1])
    wave.rss_after_mb = memory_mb(part.pid)[0]
    return wave


async def drive(base_url: str, part: Part, waves: int) -> Part:
    """`waves` waves of `part.size` calls at once against the server at `base_url` (process `part.pid`)."""
    part.rss_before_mb = memory_mb(part.pid)[0]
    keel_clients = clients(base_url, part.size)
    server = Server(base_url, part.pid)
    started, cpu, server_cpu = time.perf_counter(), time.process_time(), server.cpu_seconds() or 0.0
    try:
        for _ in range(waves):
            part.waves.append(await run_wave(keel_clients, part))
    finally:
        for keel_client in keel_clients:
            await keel_client.close()
    part.seconds, part.client_cpu = time.perf_counter() - started, time.process_time() - cpu
    part.server_cpu = (server.cpu_seconds() or 0.0) - server_cpu
    part.peak_mb = memory_mb(part.pid)[1]
    return part


@contextmanager
def servers(log: Path | None = None) -> Iterator[tuple[EmulatorProcess, str, int]]:
    """The paced emulator in a process of its own, and `keel proxy` in front of it in another: the emulator, and
    the proxy's URL and pid."""
    with (
        EmulatorProcess("--ttft-ms", str(TTFT_MS), "--tps", str(TPS), log=log, timeout=120) as emulator,
        process(*keel_proxy(emulator.base_url)) as proxy,
    ):
        yield emulator, proxy.url, proxy.pid


async def measure(streams: int, calls: int, proxy_streams: int, waves: int) -> list[Part]:
    """Every part, one after the other: the emulator's streams, its calls, then the proxy's streams."""
    with servers() as (emulator, proxy_url, proxy_pid):
        pid = emulator.process.pid
        return [
            await drive(emulator.base_url, Part("emulator streams", True, streams, STREAM_FLOOR, pid), waves),
            await drive(emulator.base_url, Part("emulator calls", False, calls, CALL_FLOOR, pid), waves),
            await drive(proxy_url, Part("proxy streams", True, proxy_streams, STREAM_FLOOR, proxy_pid), waves),
        ]


def report(part: Part) -> list[Result]:
    first, later = part.growth_mb()
    latencies = part.latencies
    firsts = [x for wave in part.waves for x in wave.firsts]
    print(
        f"{part.name}: {len(part.waves)} waves of {part.size} at once; {part.completed} completed, "
        f"errors: {dict(part.errors) or 'none'}; latency p50 {percentile(latencies, 0.5):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s (floor {part.floor:.2f} s)"
        + (f", first text p99 {percentile(firsts, 0.99):.2f} s" if firsts else "")
        + f"; server peak RSS {part.peak_mb:.0f} MB (from {part.rss_before_mb:.0f} MB; first wave +{first:.1f} MB, "
        f"later waves at most +{later:.1f} MB); {part.seconds:.1f} s, CPU: client {part.client_cpu:.1f} s, server "
        f"{part.server_cpu:.1f} s"
    )
    for wave in part.waves:
        for kind, example in wave.examples.items():
            print(f"  {kind}: {example}")
    return [
        at_most(f"{part.name}: errors", sum(part.errors.values()), 0, "", 0),
        at_most(f"{part.name}: memory a later wave added", later, max(GROWTH_SHARE * first, GROWTH_FLOOR_MB), "MB", 1),
        info(f"{part.name}: p99 latency", percentile(latencies, 0.99), "s", 2),
        info(f"{part.name}: server peak RSS", part.peak_mb, "MB", 0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="How many concurrent calls the emulator and keel proxy hold.")
    parser.add_argument("--streams", type=int, default=500, help="concurrent streams to the emulator (500)")
    parser.add_argument("--calls", type=int, default=2000, help="concurrent non-streaming calls to the emulator (2000)")
    parser.add_argument("--proxy-streams", type=int, default=200, help="concurrent streams through keel proxy (200)")
    parser.add_argument("--waves", type=int, default=3, help="waves of each (3)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    parts = asyncio.run(measure(args.streams, args.calls, args.proxy_streams, args.waves))
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"keel load: Python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load_average()}; "
        f"client (keel AsyncClient) peak RSS {client_peak:.0f} MB; {time.perf_counter() - started:.1f} s"
    )
    results = [result for part in parts for result in report(part)]
    print(f"load average after: {load_average()}")
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
