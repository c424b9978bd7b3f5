"""The batch runner's memory and result-processing speed, measured against the emulator in one run.

The emulator runs in its own process (`keel emulator serve --batch-speed 100000`: a 100,000-request batch ends
in well under a second), so its memory and CPU are not the runner's.

1. Peak RSS of `keel batch run` (its own process, started through a small wrapper that waits for it and
   reads `RUSAGE_CHILDREN.ru_maxrss`, so the figure is that runner's alone) for a 10,000-request job and a
   100,000-request job. Targets: the 100k job at most 250 MB, and at most 1.3x the 10k job (memory must not
   grow with the job).
2. Result processing throughput for the 100k job, in this process: a `BatchRunner` over a `keel.Client` on the
   loopback emulator and a fresh `SQLiteLedger` is driven until its shard has ended (input, submit, poll), then
   `collect` (download, parse, join, store) and `write_outputs` (the results file, in input order) are timed.
   Target: at least 20,000 results/s from the start of the download to the end of the results file.

Input lines are short form, `{"custom_id": "r<n>", "prompt": "Question <n % 50> [[keel:words=8]]"}`, run with
`--model claude-haiku-5-5 --max-tokens 50`: a modest number of distinct prompts keeps the emulator's side fast
(it renders each distinct message once).

Run: `.venv/bin/python bench/batch_bench.py` (`--help` for the knobs, `--profile` to cProfile part 2,
`--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anthropic
from emulator_process import EmulatorProcess
from targets import Result, add_arguments, at_least, at_most, finish, verdict

import keel
from keel.batch import BatchRunner, Defaults, RunnerOptions, SQLiteLedger, job_id_for, read_items
from keel.emulator import DEFAULT_API_KEY

MODEL = "claude-haiku-5-5"
MAX_TOKENS = 50
DISTINCT_PROMPTS = 50
BATCH_SPEED = 100_000  # simulated seconds per real second
RSS_LIMIT_MB = 250.0  # peak RSS of the 100k job: at most
RSS_RATIO_LIMIT = 1.3  # 100k peak RSS over 10k peak RSS: at most
THROUGHPUT_TARGET = 20_000.0  # results per second, download start to results file written: at least

JOB_TIMEOUT = 300.0  # seconds a `keel batch run` may take before the bench gives up on it

# Runs one command (killing it after a timeout), waits for it, and prints its peak RSS (`ru_maxrss`: KiB on Linux,
# bytes on macOS) and wall time as JSON. A fresh wrapper per job: RUSAGE_CHILDREN covers that one runner alone.
RSS_WRAPPER = """
import json, resource, subprocess, sys, time
log = open(sys.argv[1], "wb")
started = time.monotonic()
try:
    rc = subprocess.call(sys.argv[3:], stdout=log, stderr=subprocess.STDOUT, timeout=float(sys.argv[2]))
except subprocess.TimeoutExpired:
    rc = "timeout"
seconds = time.monotonic() - started
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "maxrss": rss, "seconds": seconds}))
"""


def keel_command() -> list[str]:
    script = Path(sys.executable).with_name("keel")
    if script.exists():
        return [str(script)]
    found = shutil.which("keel")
    if found is None:
        raise SystemExit("batch bench: no `keel` command next to this Python nor on PATH")
    return [found]


def write_input(path: Path, requests: int) -> None:
    with path.open("w", encoding="utf-8") as file:
        for n in range(requests):
            line = {"custom_id": f"r{n}", "prompt": f"Question {n % DISTINCT_PROMPTS} [[keel:words=8]]"}
            file.write(json.dumps(line) + "\n")


def check_results(path: Path, requests: int) -> None:
    """The results file has one succeeded line per input line, in input order."""
    count = 0
    with path.open(encoding="utf-8") as file:
        for count, raw in enumerate(file, 1):
            line = json.loads(raw)
            if line["custom_id"] != f"r{count - 1}" or line["status"] != "succeeded":
                raise SystemExit(f"batch bench: unexpected result on line {count} of {path}: {raw[:200]}")
    if count != requests:
        raise SystemExit(f"batch bench: {path} has {count} lines, expected {requests}")


# --- 1. peak RSS of the CLI runner ---------------------------------------------------------------


def cli_job(work: Path, emulator: EmulatorProcess, requests: int) -> dict[str, float]:
    """Run `keel batch run` for a fresh job of `requests` lines; its peak RSS (MB) and wall time (s)."""
    job = work / f"cli-{requests}"
    job.mkdir()
    source = job / "input.jsonl"
    write_input(source, requests)
    out = job / "out.jsonl"
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": emulator.base_url,
        "ANTHROPIC_API_KEY": DEFAULT_API_KEY,
        "KEEL_HOME": str(job / "home"),
    }
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    command = [
        *keel_command(),
        *("batch", "run", str(source), "--out", str(out), "--model", MODEL, "--max-tokens", str(MAX_TOKENS)),
        *("--shard-requests", "100000", "--poll-min", "0.2", "--poll-max", "1", "--quiet"),
    ]
    log = job / "runner.log"
    wrapper = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, str(log), str(JOB_TIMEOUT), *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(wrapper.stdout)
    if measured["rc"] != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"batch bench: keel batch run ended with status {measured['rc']}:\n{tail}")
    check_results(out, requests)
    unit = 1024 * 1024 if sys.platform == "darwin" else 1024
    return {"rss_mb": measured["maxrss"] / unit, "seconds": measured["seconds"]}


# --- 2. result processing throughput, in process ------------------------------------------------


def processing_job(
    work: Path, emulator: EmulatorProcess, requests: int, profile: bool, round_number: int
) -> dict[str, float]:
    """Drive a fresh job to its ended shards, then time `collect` and `write_outputs` (seconds for each)."""
    job = work / f"inproc-{requests}-{round_number}"
    job.mkdir()
    source = job / "input.jsonl"
    write_input(source, requests)
    out = job / "out.jsonl"
    options = RunnerOptions(
        defaults=Defaults(model=MODEL, max_tokens=MAX_TOKENS), shard_requests=100_000, poll_min=0.2, poll_max=1.0
    )
    ledger = SQLiteLedger(job / "batches.sqlite3")
    sdk = anthropic.Anthropic(base_url=emulator.base_url, api_key=DEFAULT_API_KEY)
    timings: dict[str, float] = {}
    with keel.Client(sdk, policy="background") as client:
        runner = BatchRunner(client, ledger, options)
        started = time.perf_counter()
        job_id = job_id_for(source, options)
        ledger.create_job(job_id, str(source), options.fingerprint())
        ledger.add_inputs(job_id, read_items(source, options.defaults, options.shard_bytes, ledger))
        ledger.set_job_status(job_id, "running")
        timings["prepare"] = time.perf_counter() - started

        started = time.perf_counter()
        for shard in ledger.plan_shards(job_id, options.shard_requests, options.shard_bytes):
            runner.submit(job_id, shard)
        timings["submit"] = time.perf_counter() - started

        started = time.perf_counter()
        runner.wait_for(job_id, time.monotonic())
        timings["wait"] = time.perf_counter() - started

        # Flush what this job and the ones before it wrote: the kernel writing back earlier jobs' ledgers while the
        # results are stored would be charged to them (a real batch runs for minutes to hours before its download).
        os.sync()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        for shard in ledger.shards(job_id, ("ended",)):
            runner.collect(shard)
        timings["collect"] = time.perf_counter() - started
        started = time.perf_counter()
        runner.write_outputs(job_id, out, job / "rejects.jsonl", job / "failures.jsonl")  # as `keel batch run`
        timings["write"] = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
    left = ledger.state_counts(job_id)
    ledger.close()
    if left != {"succeeded": requests}:
        raise SystemExit(f"batch bench: the in-process job ended with {left}, expected {requests} succeeded")
    check_results(out, requests)
    if profiler is not None:
        print("\nprofile of collect + write_outputs (top 30 by own time):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The batch runner's peak RSS and result processing throughput.")
    parser.add_argument("--large", type=int, default=100_000, help="requests in the large job (default 100,000)")
    parser.add_argument("--small", type=int, default=10_000, help="requests in the small job (default 10,000)")
    parser.add_argument("--rounds", type=int, default=2, help="part 2 jobs; the verdict is on the best (default 2)")
    parser.add_argument("--profile", action="store_true", help="cProfile collect + write_outputs in part 2")
    parser.add_argument("--skip-rss", action="store_true", help="only part 2 (throughput)")
    add_arguments(parser)
    args = parser.parse_args(argv)

    began = time.monotonic()
    print(
        f"keel batch bench: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores; emulator in its own process at --batch-speed {BATCH_SPEED:,}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="keel-batch-bench-") as tmp:
        work = Path(tmp)
        emulator = EmulatorProcess("--batch-speed", str(BATCH_SPEED), log=work / "emulator.log")
        try:
            if not args.skip_rss:
                small = cli_job(work, emulator, args.small)
                large = cli_job(work, emulator, args.large)
                ratio = large["rss_mb"] / small["rss_mb"]
                rss = at_most(f"peak RSS, {args.large:,}-request job", large["rss_mb"], RSS_LIMIT_MB, "MB", 1)
                growth_name = f"peak RSS, {args.large:,} over {args.small:,} requests"
                growth = at_most(growth_name, ratio, RSS_RATIO_LIMIT, digits=2)
                results += [rss, growth]
                print("\n1. peak RSS of `keel batch run` (its own process; emulator not counted)")
                for name, figures in ((f"{args.small:,} requests", small), (f"{args.large:,} requests", large)):
                    print(f"   {name:>18}: {figures['rss_mb']:7.1f} MB peak RSS, job took {figures['seconds']:5.1f} s")
                print(
                    f"   {args.large:,} job: {rss.value} (target {rss.target}), "
                    f"{growth.value} the {args.small:,} job (target {growth.target}): "
                    f"{verdict(bool(rss.passed and growth.passed))}"
                )

            rounds = [
                processing_job(work, emulator, args.large, args.profile, number) for number in range(1, args.rounds + 1)
            ]
            print(
                f"\n2. result processing, in process, {args.large:,}-request job over loopback, {args.rounds} round(s)"
            )
            rates = []
            for number, timings in enumerate(rounds, 1):
                processing = timings["collect"] + timings["write"]
                rates.append(args.large / processing)
                print(
                    f"   round {number}: before the download: input {timings['prepare']:.2f} s, "
                    f"submit {timings['submit']:.2f} s, wait {timings['wait']:.2f} s"
                )
                print(
                    f"            collect (download, parse, join, store) {timings['collect']:.2f} s "
                    f"+ write_outputs {timings['write']:.2f} s = {processing:.2f} s: {rates[-1]:,.0f} results/s"
                )
            throughput = at_least("result processing, best round", max(rates), THROUGHPUT_TARGET, "results/s", 0)
            results.append(throughput)
            print(
                f"   download start to results file written, best round: {throughput.value} "
                f"(target {throughput.target}): {throughput.verdict}"
            )
        finally:
            emulator.close()
    print(f"\ntotal {time.monotonic() - began:.1f} s")
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
