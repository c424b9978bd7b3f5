"""Goodput under enforced rate limits: keel's limiter against the naive approach, the emulator in its own process.

The emulator (`keel emulator serve --faults <scenario> --clock-speed S --access-log FILE`) enforces RPM, ITPM and
OTPM per API key, the token limits matching the request limit for this workload (each binds at the same request
rate). Its clock runs S times as fast as real time, so every bucket holds its per-minute limit and refills it in
60/S real seconds. N requests (each a prompt of about 600 tokens asking for 120, `max_tokens` 240) are sent 64 at
a time through an `asyncio.Semaphore`, by three clients in turn, each with an API key (so a budget) of its own:

1. unthrottled: the raw `anthropic.AsyncAnthropic` on a key with limits no run reaches: the time the emulator
   needs to serve the requests at this concurrency;
2. keel: `keel.AsyncClient(limiter=RateLimiter(<the limits>, window=60/S), policy="background")`;
3. naive: `asyncio.gather` over the raw `anthropic.AsyncAnthropic` with its default retries (2).

The ideal time is what the limits allow: each bucket starts full, so (demand - capacity) / refill rate for each,
the longest of the three, and never less than the unthrottled time. Targets for keel: at most 1.10x the ideal,
no failed request, at most 2% of its responses 429 (counted from the emulator's access log). The naive side is
printed for comparison.

Run: `.venv/bin/python bench/goodput.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import anthropic
from emulator_process import EmulatorProcess
from load import UNLIMITED_BUDGET, Budget, Drive, Tally, Workload, drive, read_access_log
from targets import Result, add_arguments, at_most, check, finish, info, print_verdicts

import keel
from keel.ratelimit import Limits, RateLimiter

TIME_TARGET = 1.10  # keel's time over the ideal, at most
THROTTLED_TARGET = 0.02  # keel's share of 429 responses, at most
KEYS = {"unthrottled": "goodput-unthrottled", "keel": "goodput-keel", "naive": "goodput-naive"}


def sdk_for(side: str, base_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=KEYS[side], base_url=base_url)


async def raw_side(side: str, base_url: str, workload: Workload, calls: int, concurrency: int) -> Drive:
    """The raw SDK, default retries: `unthrottled` and `naive`."""
    async with sdk_for(side, base_url) as sdk:
        return await drive(lambda n: sdk.messages.create(**workload.params(n)), calls, concurrency)


async def keel_side(
    base_url: str, workload: Workload, limits: Limits, window: float, calls: int, concurrency: int
) -> Drive:
    limiter = RateLimiter(limits, window=window)
    async with keel.AsyncClient(sdk_for("keel", base_url), limiter=limiter, policy="background") as client:
        return await drive(lambda n: client.messages.create(**workload.params(n)), calls, concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel's goodput against enforced rate limits, and the naive way's.")
    parser.add_argument("--requests", type=int, default=1_500, help="requests per side (default 1,500)")
    parser.add_argument("--rpm", type=int, default=300, help="requests per emulated minute (default 300)")
    parser.add_argument("--clock-speed", type=float, default=10.0, help="the emulator's clock speed (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight at most (default 64)")
    parser.add_argument("--input-words", type=int, default=580, help="prompt words (default 580: ~600 tokens)")
    parser.add_argument("--output-tokens", type=int, default=120, help="answer tokens (default 120)")
    parser.add_argument("--max-tokens", type=int, default=240, help="max_tokens (default 240)")
    parser.add_argument(
        "--configured",
        metavar="RPM,ITPM,OTPM",
        help="the per-minute limits keel's limiter is given (default: the emulator's); it learns the real ones from "
        "the response headers",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)

    workload = Workload(args.input_words, args.output_tokens, args.max_tokens)
    per_call = workload.counted()
    budget = Budget.matching(args.rpm, per_call, args.clock_speed)
    demand = (args.requests, args.requests * per_call[0], args.requests * per_call[1])
    limited = budget.seconds_for(demand)
    configured = budget.limiter_limits()
    if args.configured:
        rpm, itpm, otpm = (int(n) for n in args.configured.split(","))
        configured = Limits(rpm, itpm, otpm, per=budget.window)
    print(
        f"goodput: {args.requests:,} requests per side, {args.concurrency} at a time, each {per_call[0]:,} input "
        f"tokens and {per_call[1]:,} output tokens (max_tokens {args.max_tokens:,}); load average "
        f"{os.getloadavg()[0]:.2f}\nlimits per key: {budget.describe()}"
    )
    if args.configured:
        print(f"keel's limiter is configured with {args.configured} per emulated minute instead")

    with tempfile.TemporaryDirectory(prefix="keel-goodput-") as tmp:
        scenario, access_log = Path(tmp) / "limits.toml", Path(tmp) / "access.jsonl"
        keys = {KEYS["unthrottled"]: UNLIMITED_BUDGET, KEYS["keel"]: None, KEYS["naive"]: None}
        budget.write_scenario(scenario, keys)
        speed = f"{args.clock_speed:g}"
        with EmulatorProcess("--faults", str(scenario), "--clock-speed", speed, "--access-log", str(access_log)) as emu:
            url, calls, concurrency = emu.base_url, args.requests, args.concurrency
            runs = {  # one after the other, in this order
                "unthrottled": asyncio.run(raw_side("unthrottled", url, workload, calls, concurrency)),
                "keel": asyncio.run(keel_side(url, workload, configured, budget.window, calls, concurrency)),
                "naive": asyncio.run(raw_side("naive", url, workload, calls, concurrency)),
            }
        entries = read_access_log(access_log)
    tallies = {name: Tally.of(entries, KEYS[name]) for name in runs}

    ideal = max(runs["unthrottled"].seconds, *limited.values())
    print(
        "ideal: the limits allow "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in limited.items())
        + f"; unthrottled {runs['unthrottled'].seconds:.1f} s; ideal {ideal:.1f} s\n"
    )
    print(f"{'side':<44}{'time':>9}{'x ideal':>9}{'served':>8}{'failed':>8}{'429s / responses':>24}")
    labels = {
        "unthrottled": "unthrottled (raw SDK, limits not enforced)",
        "keel": "keel (AsyncClient, limiter, background)",
        "naive": "naive (raw SDK, default retries)",
    }
    for name, run in runs.items():
        tally = tallies[name]
        share = f"{tally.throttled:,} / {tally.responses:,} ({tally.throttled_share:.1%})"
        served, times = run.calls - run.failed, f"{run.seconds:>7.1f} s{run.seconds / ideal:>9.3f}"
        print(f"{labels[name]:<44}{times}{served:>8,}{run.failed:>8,}{share:>24}")
        if run.failed:
            print(f"    failures: {run.failures_text()}")
    print()

    kept, naive = runs["keel"], runs["naive"]
    results: list[Result] = [
        at_most("keel time / ideal", kept.seconds / ideal, TIME_TARGET),
        check("keel failed requests", f"{kept.failed:,}", "0", kept.failed == 0),
        at_most("keel 429 share", tallies["keel"].throttled_share * 100, THROTTLED_TARGET * 100, "%", 2),
        info("ideal time (limits)", ideal, "s", 1),
        info("unthrottled time", runs["unthrottled"].seconds, "s", 1),
        info("naive time / ideal", naive.seconds / ideal),
        info("naive failed requests", naive.failed, "", 0),
        info("naive 429 share", tallies["naive"].throttled_share * 100, "%", 1),
    ]
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
