"""Run every benchmark in bench/, one after the other, and end with one table of their targets.

Each benchmark runs as a subprocess of this Python with `--json FILE` (see `targets.py`); its own output is shown
as it runs. The table lists every target (benchmark, metric, measured value, target, PASS/FAIL) and, for the
figures without a target, the figure with "info". One at a time, so the benchmarks do not share the cores.

Run: `make bench`, or `.venv/bin/python bench/run_all.py [--quick] [--strict] [--only NAME ...]`.
`--quick` passes small sizes to every benchmark: a smoke run of about a minute whose figures mean little.
The exit status is 1 when a benchmark did not finish, or with `--strict` when a target fails; else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from targets import Result, load

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    script: str  # in bench/ (an absolute path also works)
    quick: tuple[str, ...] = ()  # arguments for a smoke run with `--quick`

    @property
    def name(self) -> str:
        return Path(self.script).stem


BENCHMARKS = (
    Benchmark("import_time.py", ("--runs", "3", "--warmup", "1")),
    Benchmark(
        "emulator_bench.py",
        ("--rounds", "1", "--calls", "20", "--warmup", "5", "--words", "500", "--streams", "1"),
    ),
    Benchmark("client_bench.py", ("--rounds", "1", "--calls", "100", "--streams", "5", "--warmup", "20")),
    Benchmark("client_loopback.py", ("--blocks", "4", "--calls", "20", "--warmup", "20")),
    Benchmark("client_overhead.py", ("--blocks", "4", "--calls", "20", "--warmup", "20")),
    Benchmark("telemetry_overhead.py", ("--blocks", "4", "--calls", "20", "--warmup", "20")),
    Benchmark("batch_bench.py", ("--small", "500", "--large", "2000", "--rounds", "1")),
    Benchmark("stores_bench.py", ("--requests", "5000", "--claims", "500")),
    Benchmark("limiter_bench.py", ("--count", "2000", "--redis-count", "300")),
    Benchmark(
        "client_concurrency.py",
        ("--blocks", "2", "--calls", "128", "--warmup", "64", "--sequential-blocks", "2", "--sequential-calls", "20"),
    ),
    Benchmark("goodput.py", ("--requests", "200", "--rpm", "60", "--clock-speed", "20", "--input-words", "100")),
    Benchmark("shared_budget.py", ("--requests", "160", "--rpm", "60", "--clock-speed", "20", "--input-words", "100")),
    Benchmark("report_bench.py", ("--calls", "20000")),
    Benchmark("reliability_load.py", ("--streams", "20", "--calls", "50", "--proxy-streams", "10", "--waves", "2")),
    Benchmark(
        "proxy_bench.py",
        ("--rounds", "1", "--calls", "40", "--warmup", "10", "--events", "500", "--streams", "2", "--firsts", "5"),
    ),
)


@dataclass
class Outcome:
    """What one benchmark reported, or why it reported nothing."""

    name: str
    seconds: float
    results: list[Result] = field(default_factory=list)
    error: str | None = None


def run(benchmark: Benchmark, quick: bool) -> Outcome:
    """Run one benchmark to the end, its output going to ours, and collect the results it wrote."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        report = Path(tmp) / "results.json"
        command = [sys.executable, str(BENCH / benchmark.script), "--json", str(report)]
        command += benchmark.quick if quick else ()
        sys.stdout.flush()
        started = time.monotonic()
        status = subprocess.run(command, check=False).returncode
        outcome = Outcome(benchmark.name, time.monotonic() - started)
        if status != 0:
            outcome.error = f"exit status {status}"
        elif not report.exists():
            outcome.error = "wrote no results"
        else:
            outcome.results = load(report)
    return outcome


VERDICT_STYLES = {"PASS": "green", "FAIL": "bold red", "info": "dim", "ERROR": "bold red"}


def table(outcomes: Sequence[Outcome]) -> Table:
    grid = Table(title="keel benchmarks: all targets")
    for header in ("benchmark", "metric", "measured", "target", "verdict"):
        grid.add_column(header, justify="right" if header == "measured" else "left")
    for outcome in outcomes:
        rows = [(r.metric, r.value, r.target or "", r.verdict) for r in outcome.results]
        if outcome.error is not None:
            rows.append(("did not finish", outcome.error, "", "ERROR"))
        for n, (metric, value, target, verdict) in enumerate(rows):
            name = outcome.name if n == 0 else ""
            style = VERDICT_STYLES[verdict]
            grid.add_row(name, metric, value, target, f"[{style}]{verdict}[/]", end_section=n == len(rows) - 1)
    return grid


def counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    verdicts = [r.verdict for o in outcomes for r in o.results] + ["ERROR" for o in outcomes if o.error]
    return {verdict: verdicts.count(verdict) for verdict in VERDICT_STYLES if verdict in verdicts}


def exit_status(outcomes: Sequence[Outcome], strict: bool) -> int:
    """1 when a benchmark did not finish, or with `strict` when a target failed; else 0."""
    tally = counts(outcomes)
    return 1 if tally.get("ERROR") or (strict and tally.get("FAIL")) else 0


def main(argv: list[str] | None = None) -> int:
    names = [benchmark.name for benchmark in BENCHMARKS]
    parser = argparse.ArgumentParser(description="Run every benchmark in bench/ and print one table of the targets.")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (figures mean little)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run only these: {', '.join(names)}")
    args = parser.parse_args(argv)

    console = Console(width=None if sys.stdout.isatty() else 120)
    chosen = [benchmark for benchmark in BENCHMARKS if args.only is None or benchmark.name in args.only]
    began = time.monotonic()
    outcomes: list[Outcome] = []
    for benchmark in chosen:
        console.rule(f"{benchmark.name}{' --quick' if args.quick else ''}")
        outcomes.append(run(benchmark, args.quick))
        console.print(f"[dim]{benchmark.name}: {outcomes[-1].seconds:.1f} s[/]")
    console.print()
    console.print(table(outcomes))
    tally = ", ".join(f"{count} {verdict}" for verdict, count in counts(outcomes).items())
    quick = " with --quick" if args.quick else ""
    plural = "" if len(outcomes) == 1 else "s"
    console.print(f"{len(outcomes)} benchmark{plural}{quick} in {time.monotonic() - began:.0f} s: {tally}")
    return exit_status(outcomes, args.strict)


if __name__ == "__main__":
    sys.exit(main())
