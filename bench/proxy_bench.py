"""What `keel proxy` adds, measured side by side in one run against the minimal apps of `emulator_bench.py`.

The minimal apps (a fixed Message; a stream of fixed `content_block_delta` events) each run in a uvicorn process of
their own, and each has a `keel proxy --upstream ... --quiet` process in front of it, as users run it. The client
(this process) talks to each app directly and through its proxy, alternately:

1. Sequential non-streaming `messages.create` calls with the official SDK (`max_retries=0`), in chunks of `--chunk`
   calls a side. Reported as ms per call; the proxy's cost is the median, over the back-to-back chunk pairs, of
   (through the proxy - direct). Target: at most 1 ms.
2. Streaming throughput to a plain HTTP line reader (`httpx2` `iter_lines`): SSE events per second of one stream
   of `--events` events, direct and through the proxy, alternately. Target: through/direct at least 0.7 (median of
   the pairs).
3. Time to the first event of a paced stream, as the API sends one (a `keel emulator serve --tps 200` process,
   `--paced` tokens a stream), direct and through a proxy: the median added ms (the minimal stream app sends its
   events in one burst, which says nothing about a first token). Target: at most 3 ms, "a few".
4. The proxy's own CPU time (user + system, from /proc) per proxied non-streaming call, for information: what the
   added milliseconds are made of, whatever the load on the machine.

After a warm-up; the figures are the best round of each side; the verdicts take medians over all pairs, which keeps
bursts of background load (other processes on the 2 cores) out of them.

Run: `.venv/bin/python bench/proxy_bench.py` (`make bench` runs it with the others); `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx2
from emulator_bench import STREAM_HEADERS, call_once, loopback_sdk, stream_body, timed_calls
from targets import add_arguments, at_least, at_most, finish, info, print_verdicts

from keel.emulator.server import free_port

BENCH = Path(__file__).resolve().parent
ADDED_MS_TARGET = 1.0  # ms the proxy adds to a non-streaming call: at most
STREAM_RATIO_TARGET = 0.7  # events/s through the proxy over events/s direct: at least
TTFT_ADDED_TARGET = 3.0  # ms the proxy adds to the time to the first event of a paced stream: at most
PACED_TPS = 200  # tokens a second of the paced emulator stream
SERVE_APP = """
import sys, uvicorn
sys.path.insert(0, {bench!r})
from emulator_bench import minimal_message_app, minimal_stream_app
app = minimal_message_app() if {events} == 0 else minimal_stream_app({events})
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False, lifespan="off")
"""


def wait_listening(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:g} s")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the process has used so far; None where /proc does not tell."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def process(command: list[str], port: int) -> Iterator[Server]:
    """A server process listening on `port`, ended on exit."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield Server(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def minimal_app(events: int) -> tuple[list[str], int]:
    """The command serving a minimal app (the Message one with `events=0`) and its port."""
    port = free_port()
    return [sys.executable, "-c", SERVE_APP.format(bench=str(BENCH), events=events, port=port)], port


def paced_emulator() -> tuple[list[str], int]:
    port = free_port()
    command = [sys.executable, "-c", "from keel.cli import main; main()", "emulator", "serve", "--port", str(port)]
    return [*command, "--tps", str(PACED_TPS)], port


def keel_proxy(upstream: str) -> tuple[list[str], int]:
    port = free_port()
    command = [sys.executable, "-c", "from keel.cli import main; main()", "proxy", "--upstream", upstream]
    return [*command, "--port", str(port), "--quiet"], port


@dataclass
class Side:
    """One workload measured direct and through the proxy, in back-to-back pairs of chunks."""

    direct: list[float] = field(default_factory=list)  # one figure per chunk
    proxied: list[float] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # per round: mean of each side

    def add_round(self, direct: list[float], proxied: list[float]) -> None:
        self.direct += direct
        self.proxied += proxied
        self.rounds.append((statistics.fmean(direct), statistics.fmean(proxied)))

    def added(self) -> float:
        return statistics.median(p - d for d, p in zip(self.direct, self.proxied, strict=True))

    def ratio(self) -> float:
        return statistics.median(p / d for d, p in zip(self.direct, self.proxied, strict=True))


def call_round(side: Side, direct: anthropic.Anthropic, proxied: anthropic.Anthropic, calls: int, chunk: int) -> None:
    figures: tuple[list[float], list[float]] = ([], [])
    clients = (direct, proxied)
    gc.collect()
    for n in range(max(1, calls // chunk)):
        for which in (0, 1) if n % 2 == 0 else (1, 0):
            figures[which].append(timed_calls(clients[which], chunk) * 1000 / chunk)
    side.add_round(*figures)


def read_timed(client: httpx2.Client, events_wanted: int) -> tuple[float, float]:
    """One stream read line by line: (events per second, ms to the first event)."""
    events = 0
    first = 0.0
    start = time.perf_counter()
    with client.stream("POST", "/v1/messages", json=stream_body(events_wanted), headers=STREAM_HEADERS) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                events += 1
                if events == 1:
                    first = (time.perf_counter() - start) * 1000
    assert events >= events_wanted, f"expected {events_wanted} events, got {events}"
    return events / (time.perf_counter() - start), first


def stream_round(
    side: Side, direct: httpx2.Client, proxied: httpx2.Client, streams: int, events: int, figure: int
) -> None:
    """`streams` streams from each side, alternating sides every stream; `figure` 0: events/s, 1: ms to the first."""
    figures: tuple[list[float], list[float]] = ([], [])
    readers = (direct, proxied)
    gc.collect()
    for n in range(streams):
        for which in (0, 1) if n % 2 == 0 else (1, 0):
            figures[which].append(read_timed(readers[which], events)[figure])
    side.add_round(*figures)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What keel proxy adds, against the minimal apps, side by side.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best of each side is shown (default 5)")
    parser.add_argument("--calls", type=int, default=300, help="non-streaming calls per side per round (default 300)")
    parser.add_argument("--chunk", type=int, default=10, help="calls per side before switching sides (default 10)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per side (default 50)")
    parser.add_argument("--events", type=int, default=5000, help="events per stream (default 5000)")
    parser.add_argument("--streams", type=int, default=6, help="streams per side per round (default 6)")
    parser.add_argument("--paced", type=int, default=5, help="tokens of a paced stream (default 5)")
    parser.add_argument("--firsts", type=int, default=20, help="paced streams per side per round (default 20)")
    add_arguments(parser)
    args = parser.parse_args(argv)

    calls, ttft, streaming = Side(), Side(), Side()
    load_before = load_average()
    began = time.perf_counter()
    with ExitStack() as stack:
        message_app = stack.enter_context(process(*minimal_app(0)))
        stream_app = stack.enter_context(process(*minimal_app(args.events)))
        message_proxy = stack.enter_context(process(*keel_proxy(message_app.url)))
        stream_proxy = stack.enter_context(process(*keel_proxy(stream_app.url)))
        paced_app = stack.enter_context(process(*paced_emulator()))
        paced_proxy = stack.enter_context(process(*keel_proxy(paced_app.url)))
        direct_sdk = stack.enter_context(loopback_sdk(message_app.url))
        proxied_sdk = stack.enter_context(loopback_sdk(message_proxy.url))
        direct_reader = stack.enter_context(httpx2.Client(base_url=stream_app.url, timeout=60))
        proxied_reader = stack.enter_context(httpx2.Client(base_url=stream_proxy.url, timeout=60))
        direct_paced = stack.enter_context(httpx2.Client(base_url=paced_app.url, timeout=60))
        proxied_paced = stack.enter_context(httpx2.Client(base_url=paced_proxy.url, timeout=60))

        for client in (direct_sdk, proxied_sdk):
            for _ in range(args.warmup):
                call_once(client)
        for reader in (direct_reader, proxied_reader):
            read_timed(reader, args.events)
        for reader in (direct_paced, proxied_paced):
            read_timed(reader, args.paced)

        proxy_cpu = 0.0
        for _ in range(args.rounds):
            before = message_proxy.cpu_seconds()
            call_round(calls, direct_sdk, proxied_sdk, args.calls, args.chunk)
            after = message_proxy.cpu_seconds()
            proxy_cpu += after - before if after is not None and before is not None else math.nan
            stream_round(streaming, direct_reader, proxied_reader, args.streams, args.events, figure=0)
            stream_round(ttft, direct_paced, proxied_paced, args.firsts, args.paced, figure=1)
    elapsed = time.perf_counter() - began

    print(
        f"keel proxy bench: Python {platform.python_version()}, {os.cpu_count()} cores; {args.rounds} rounds ("
        f"{args.calls} calls, {args.streams} streams of {args.events} events and {args.firsts} paced streams of "
        f"{args.paced} tokens per side per round); "
        f"{elapsed:.1f} s; load average {load_before} before, {load_average()} after"
    )
    print()
    print("figures: best round of each side; verdicts: medians over the back-to-back chunk pairs")
    print(f"{'workload':<40}{'direct':>10}{'proxy':>10}   per round (direct/proxy)")
    for label, side, best, spec in (
        ("non-streaming call (ms)", calls, min, ".3f"),
        ("stream (events/s)", streaming, max, ",.0f"),
        ("time to first event, paced (ms)", ttft, min, ".2f"),
    ):
        per_round = " ".join(f"{d:{spec}}/{p:{spec}}" for d, p in side.rounds)
        direct_best, proxied_best = best(d for d, _ in side.rounds), best(p for _, p in side.rounds)
        print(f"{label:<40}{direct_best:>10{spec}}{proxied_best:>10{spec}}   {per_round}")
    print()
    results = [
        at_most("non-streaming call, added by the proxy", calls.added(), ADDED_MS_TARGET, unit="ms", digits=3),
        at_least("streaming events/s, proxy/direct", streaming.ratio(), STREAM_RATIO_TARGET, digits=2),
        at_most("time to first event, added by the proxy", ttft.added(), TTFT_ADDED_TARGET, unit="ms", digits=2),
    ]
    print_verdicts(results)
    if not math.isnan(proxy_cpu):  # the proxy's own CPU per proxied call: what the added ms are made of, load aside
        results.append(info("proxy CPU per non-streaming call", proxy_cpu * 1000 / (args.rounds * args.calls), "ms"))
        print(f"proxy CPU per non-streaming call: {results[-1].value} (user + system, from /proc)")
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
