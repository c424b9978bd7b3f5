"""One budget shared by 4 worker processes: Redis-backed limiters against in-process ones, emulator in its own process.

The emulator (`keel emulator serve --faults <scenario> --clock-speed S --access-log FILE`) enforces the same
limits as bench/goodput.py (RPM, with matching ITPM and OTPM) on two API keys, one per part. In each part, 4 worker
processes (this script with `--worker`) start together and share that key's budget: each sends N/4 requests,
C at a time, through `keel.AsyncClient(limiter=RateLimiter(<the limits>, backend=..., name=<one name>,
window=60/S), policy="background")`:

1. Redis: every worker's limiter has a `RedisBackend` on `$KEEL_REDIS_URL` (else redis://127.0.0.1:6379/0) under
   one fresh key prefix, deleted afterwards, so the four draw on one bucket set;
2. in-process: every worker's limiter has a `LocalBackend` of its own, as when N processes each think they own
   the budget (they still learn from the response headers and the 429s).

From the emulator's access log, per part: the requests it received (any status), over the run's duration T (first
to last request), as an aggregate rate against the limit's. The buckets start full, so the rate counts what the
limit allows beyond a full bucket: (received - capacity) / T, over the refill rate. Target: the Redis part at most
1.05x. The in-process part is printed for comparison (it overshoots). Without a Redis, part 1 is skipped ("info").

Run: `.venv/bin/python bench/shared_budget.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import anthropic
import bench_redis
from emulator_process import EmulatorProcess
from load import Budget, Tally, Workload, drive, read_access_log
from targets import Result, add_arguments, at_most, finish, info, note, print_verdicts

import keel
from keel.ratelimit import Backend, LocalBackend, RateLimiter, redact_url

TARGET = 1.05  # the Redis part's aggregate rate over the limit's, at most
LIMITER_NAME = "shared-budget"
KEYS = {"redis": "shared-budget-redis", "local": "shared-budget-local"}


@dataclass(frozen=True)
class Job:
    """What one worker does (given to it as JSON; the Redis URL comes through `KEEL_REDIS_URL`)."""

    backend: str  # "redis" or "local"
    base_url: str
    api_key: str
    calls: int
    concurrency: int
    prefix: str  # the Redis key prefix ("" for local)
    budget: dict[str, Any]  # a Budget's fields
    workload: dict[str, Any]  # a Workload's fields


async def work(job: Job) -> dict[str, object]:
    budget, workload = Budget(**job.budget), Workload(**job.workload)
    backend: Backend = LocalBackend()
    if job.backend == "redis":
        from keel.ratelimit.redis_backend import RedisBackend

        backend = RedisBackend(bench_redis.REDIS_URL, prefix=job.prefix)
    limiter = RateLimiter(budget.limiter_limits(), backend=backend, name=LIMITER_NAME, window=budget.window)
    sdk = anthropic.AsyncAnthropic(api_key=job.api_key, base_url=job.base_url)
    async with keel.AsyncClient(sdk, limiter=limiter, policy="background") as client:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the go
        done = await drive(lambda n: client.messages.create(**workload.params(n)), job.calls, job.concurrency)
    await limiter.aclose()
    return {"seconds": done.seconds, "failed": done.failed}


def worker(raw: str) -> int:
    print(json.dumps(asyncio.run(work(Job(**json.loads(raw))))), flush=True)
    return 0


def run_part(jobs: list[Job]) -> list[dict[str, float]]:
    """Start a worker per job, let them all go at once when all are ready, and collect what they report."""
    command = [sys.executable, __file__, "--worker"]
    workers = [
        subprocess.Popen([*command, json.dumps(asdict(job))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for job in jobs
    ]
    try:
        for process in workers:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"shared budget: a worker did not start (status {process.wait()})")
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [json.loads(process.communicate(timeout=600)[0]) for process in workers]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
    if any(process.returncode for process in workers):
        raise SystemExit("shared budget: a worker failed")
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="4 processes on one Redis-backed limiter, and 4 in-process ones.")
    parser.add_argument("--workers", type=int, default=4, help="worker processes per part (default 4)")
    parser.add_argument("--requests", type=int, default=1_200, help="requests per part, all workers (default 1,200)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per worker (default 16)")
    parser.add_argument("--rpm", type=int, default=300, help="requests per emulated minute (default 300)")
    parser.add_argument("--clock-speed", type=float, default=10.0, help="the emulator's clock speed (default 10)")
    parser.add_argument("--input-words", type=int, default=580, help="prompt words (default 580: ~600 tokens)")
    parser.add_argument("--output-tokens", type=int, default=120, help="answer tokens (default 120)")
    parser.add_argument("--max-tokens", type=int, default=240, help="max_tokens (default 240)")
    parser.add_argument("--worker", metavar="JOB", help=argparse.SUPPRESS)  # a worker process: its Job as JSON
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)

    workload = Workload(args.input_words, args.output_tokens, args.max_tokens)
    budget = Budget.matching(args.rpm, workload.counted(), args.clock_speed)
    skipped = bench_redis.unavailable()
    print(
        f"shared budget: {args.workers} worker processes per part, {args.requests:,} requests per part "
        f"({args.concurrency} in flight per worker); load average {os.getloadavg()[0]:.2f}\n"
        f"limits per key: {budget.describe()}\n"
        f"Redis: {skipped or redact_url(bench_redis.REDIS_URL)}"
    )
    parts = ["local"] if skipped else ["redis", "local"]
    tallies: dict[str, Tally] = {}
    failed: dict[str, int] = {}
    scratch = contextlib.nullcontext("") if skipped else bench_redis.scratch_prefix("shared-budget")
    with tempfile.TemporaryDirectory(prefix="keel-shared-budget-") as tmp, scratch as prefix:
        scenario, access_log = Path(tmp) / "limits.toml", Path(tmp) / "access.jsonl"
        budget.write_scenario(scenario, dict.fromkeys(KEYS.values()))
        speed = f"{args.clock_speed:g}"
        with EmulatorProcess("--faults", str(scenario), "--clock-speed", speed, "--access-log", str(access_log)) as emu:
            template = Job("", emu.base_url, "", 0, args.concurrency, prefix, asdict(budget), asdict(workload))
            shares = [args.requests // args.workers + (n < args.requests % args.workers) for n in range(args.workers)]
            for part in parts:
                jobs = [replace(template, backend=part, api_key=KEYS[part], calls=calls) for calls in shares]
                failed[part] = sum(int(report["failed"]) for report in run_part(jobs))
        entries = read_access_log(access_log)
        for part in parts:
            tallies[part] = Tally.of(entries, KEYS[part])

    rate = budget.per_second()[0]
    print(f"\n{'part':<34}{'received':>10}{'429s':>8}{'failed':>8}{'seconds':>9}{'rate/s':>9}{'x limit':>9}")
    ratios: dict[str, float] = {}
    labels = {"redis": f"{args.workers} workers, one Redis limiter", "local": f"{args.workers} in-process limiters"}
    for part, tally in tallies.items():
        seconds = tally.last - tally.first
        aggregate = (tally.responses - budget.rpm) / seconds
        ratios[part] = aggregate / rate
        print(
            f"{labels[part]:<34}{tally.responses:>10,}{tally.throttled:>8,}{failed[part]:>8,}{seconds:>9.1f}"
            f"{aggregate:>9.1f}{ratios[part]:>9.2f}"
        )
    print(f"limit: {rate:.1f} requests/s beyond a full bucket of {budget.rpm:,}\n")

    results: list[Result] = []
    if skipped:
        results.append(note("Redis, aggregate rate / limit", f"skipped: {skipped}"))
    else:
        results.append(at_most("Redis, aggregate rate / limit", ratios["redis"], TARGET, digits=2))
        results.append(info("Redis, 429 share", tallies["redis"].throttled_share * 100, "%", 1))
    results.append(info("in-process, aggregate rate / limit", ratios["local"], digits=2))
    results.append(info("in-process, 429 share", tallies["local"].throttled_share * 100, "%", 1))
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
