"""`keel report` over a big records file: time and peak memory of the text report and of `--html`.

Writes a synthetic records file of `--calls` calls (default 1,000,000) shaped like a day of production traffic:
three models, standard/stream/batch calls, one attempt record per attempt, retries, a 529 storm and a 429 spell,
failures of several classes and a few corrupt lines. Then runs `keel report FILE` and `keel report FILE --html
PAGE` as subprocesses, once on the whole file and once on its first tenth, and prints each one's wall time and
peak RSS: bounded memory shows as the same RSS for ten times the records.

Run: `.venv/bin/python bench/report_bench.py [--calls N] [--keep DIR]` (`--keep` leaves the file and pages there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from targets import Result, add_arguments, finish, info

from keel import Usage, load_prices

MODELS = (("claude-sonnet-5-5", 0.55), ("claude-haiku-5-5", 0.35), ("claude-opus-5-5", 0.10))
MODES = (("standard", 0.70), ("stream", 0.25), ("batch", 0.05))
STOPS = (("end_turn", 0.86), ("max_tokens", 0.07), ("tool_use", 0.05), ("stop_sequence", 0.015), ("refusal", 0.005))
FAILURES = (  # (class, status, error type, message): the usual background of failed calls
    ("server_error", 500, "api_error", "Internal server error"),
    ("invalid_request", 400, "invalid_request_error", "max_tokens: must be at most 64000 for this model"),
    ("timeout", None, None, "Request timed out after 600.0 s"),
    ("connection", None, None, "Connection error: [Errno 104] Connection reset by peer"),
)
SPAN_S = 6 * 3600.0  # the traffic covers six hours
STORM = (0.40, 0.45)  # a 529 storm over this share of the span: most calls retried, some give up
SPELL = (0.70, 0.73)  # a 429 spell
CORRUPT_EVERY = 200_000  # one torn line per this many calls


def pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in table], [weight for _, weight in table])[0]


@dataclass
class Writer:
    """Writes call and attempt records as `keel.Client(records=...)` would (same fields, one JSON object a line)."""

    rng: random.Random
    start: float

    def __post_init__(self) -> None:
        self.prices = load_prices()
        self.serial = 0

    def call_lines(self, index: int, calls: int) -> list[str]:
        rng = self.rng
        self.serial += 1
        call_id = f"call_bench{self.serial:09d}"
        share = index / calls
        at = self.start + share * SPAN_S
        model, mode = pick(rng, MODELS), pick(rng, MODES)
        errors: list[tuple[str, int | None, str | None, str]] = []
        if STORM[0] <= share < STORM[1] and rng.random() < 0.6:
            errors = [("overloaded", 529, "overloaded_error", "Overloaded")] * rng.randint(1, 5)
        elif SPELL[0] <= share < SPELL[1] and rng.random() < 0.4:
            errors = [
                ("rate_limited", 429, "rate_limit_error", "Request tokens over the per-minute limit")
            ] * rng.randint(1, 3)
        gave_up = len(errors) >= 5 or (errors and errors[0][0] == "rate_limited" and len(errors) == 3)
        if not errors and rng.random() < 0.004:
            errors, gave_up = [rng.choice(FAILURES)], True
        latency = rng.lognormvariate(math.log(900 if mode != "batch" else 1500), 0.6)
        lines, clock = [], at - latency / 1000
        for attempt, (name, status, kind, _) in enumerate(errors, 1):
            clock += 0.05 + rng.random() * 0.5
            lines.append(self.attempt(call_id, attempt, status, kind, name, clock, rng.uniform(20, 400)))
        failed = errors[-1] if gave_up else None
        if failed is None:
            lines.append(self.attempt(call_id, len(errors) + 1, 200, None, None, at, latency * 0.1))
        output = 0 if failed else rng.randint(20, 1200)
        usage = {
            "input_tokens": 0 if failed else rng.randint(200, 6000),
            "output_tokens": output,
            "cache_write_5m_tokens": 0 if failed or rng.random() < 0.8 else rng.randint(1000, 4000),
            "cache_write_1h_tokens": 0,
            "cache_read_tokens": 0 if failed or rng.random() < 0.5 else rng.randint(1000, 8000),
        }
        stop = None if failed else pick(rng, STOPS)
        record = {
            "call_id": call_id,
            "mode": mode,
            "policy": "background" if mode == "batch" else "interactive",
            "model": model,
            "request_id": f"req_bench{rng.getrandbits(64):016x}" if failed is None or failed[1] else None,
            "stop_reason": stop,
            "outcome": None if failed else stop,
            "usage": usage,
            "cost_usd": None if failed else self.prices.cost(model, Usage(**usage), batch=mode == "batch"),
            "latency_ms": latency,
            "ttft_ms": latency * rng.uniform(0.1, 0.4) if mode == "stream" else None,
            "attempts": len(errors) + (0 if failed else 1),
            "retries": len(errors) - (1 if failed else 0),
            "rounds": 1,
            "error_class": failed[0] if failed else None,
            "error": failed[3] if failed else None,
            "content": None,
            "at": at,
            "kind": "call",
        }
        lines.append(json.dumps(record, separators=(",", ":")))
        return lines

    def attempt(
        self, call_id: str, number: int, status: int | None, kind: str | None, name: str | None, at: float, ms: float
    ) -> str:
        record = {
            "call_id": call_id,
            "attempt": number,
            "retry_count": number - 1,
            "endpoint": "/v1/messages",
            "request_id": f"req_bench{self.rng.getrandbits(64):016x}" if status else None,
            "status": status,
            "error_type": kind,
            "error_code": None,
            "error_class": name,
            "latency_ms": ms,
            "at": at,
            "kind": "attempt",
        }
        return json.dumps(record, separators=(",", ":"))


def write_records(path: Path, calls: int, seed: int = 11) -> int:
    """The records of `calls` calls (and a torn line every CORRUPT_EVERY calls); returns the number of lines."""
    writer = Writer(random.Random(seed), start=1_795_000_000.0)
    lines = 0
    with path.open("w") as file:
        for index in range(calls):
            batch = writer.call_lines(index, calls)
            if index % CORRUPT_EVERY == CORRUPT_EVERY // 2:
                batch.append(batch[-1][: len(batch[-1]) // 2])  # a torn write
            file.write("\n".join(batch) + "\n")
            lines += len(batch)
    return lines


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float


def timed(command: list[str]) -> Run:
    """Run to the end; wall time and the child's own peak RSS (from wait4, so no other process counts)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {child.returncode}")
    return Run(seconds, usage.ru_maxrss / 1024)  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls in the big file (default 1,000,000)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the files here and leave them")
    add_arguments(parser)
    args = parser.parse_args()
    keel = [str(Path(sys.executable).with_name("keel"))]
    with tempfile.TemporaryDirectory(prefix="keel-report-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sizes = (args.calls // 10, args.calls)
        results: list[Result] = []
        print(f"{'calls':>10} {'lines':>10} {'MB':>7} {'report':>22} {'report --html':>22}")
        for calls in sizes:
            records = folder / f"records-{calls}.jsonl"
            began = time.perf_counter()
            lines = write_records(records, calls)
            written = time.perf_counter() - began
            text = timed([*keel, "report", str(records)])
            page = timed([*keel, "report", str(records), "--html", str(folder / f"report-{calls}.html")])
            megabytes = records.stat().st_size / 1e6
            print(
                f"{calls:>10,} {lines:>10,} {megabytes:>7,.0f} {text.seconds:>9.1f} s {text.peak_rss_mb:>6.0f} MB RSS"
                f" {page.seconds:>9.1f} s {page.peak_rss_mb:>6.0f} MB RSS   (written in {written:.0f} s)"
            )
            results += [
                info(f"report {calls:,} calls", text.seconds, "s", 1),
                info(f"report {calls:,} calls peak RSS", text.peak_rss_mb, "MB", 0),
                info(f"report --html {calls:,} calls", page.seconds, "s", 1),
                info(f"report --html {calls:,} calls peak RSS", page.peak_rss_mb, "MB", 0),
            ]
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
