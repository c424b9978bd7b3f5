"""bench/run_all.py: runs each benchmark as a subprocess, collects what it reports with `--json`, prints one table."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

BENCH = Path(__file__).resolve().parents[1] / "bench"

FAKE_BENCHMARK = """
import argparse, sys
from targets import add_arguments, at_least, at_most, finish, info
parser = argparse.ArgumentParser()
parser.add_argument("--fail", action="store_true")
add_arguments(parser)
args = parser.parse_args()
results = [at_most("keel/raw", 1.5 if args.fail else 1.02, 1.05), at_least("rate", 25_000, 20_000, "results/s", 0)]
results.append(info("added per call", 12.34, "µs", 1))
sys.exit(finish(args, results))
"""


@pytest.fixture
def run_all(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/run_all.py as a module, with bench/ importable here and in the benchmarks it starts."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("PYTHONPATH", str(BENCH))
    return importlib.import_module("run_all")


def rendered(run_all: ModuleType, outcomes: list[object]) -> str:
    console = Console(record=True, width=120)
    console.print(run_all.table(outcomes))
    return console.export_text()


def test_collects_targets_and_figures_and_exits_non_zero_on_fail_only_with_strict(
    run_all: ModuleType, tmp_path: Path
) -> None:
    script = tmp_path / "fake_bench.py"
    script.write_text(FAKE_BENCHMARK, encoding="utf-8")
    passing = run_all.run(run_all.Benchmark(str(script)), quick=False)
    failing = run_all.run(run_all.Benchmark(str(script), quick=("--fail",)), quick=True)

    assert passing.error is None and failing.error is None
    assert [(r.metric, r.value, r.target, r.verdict) for r in passing.results] == [
        ("keel/raw", "1.020x", "<= 1.05x", "PASS"),
        ("rate", "25,000 results/s", ">= 20,000 results/s", "PASS"),
        ("added per call", "12.3 µs", None, "info"),
    ]
    assert [r.verdict for r in failing.results] == ["FAIL", "PASS", "info"]
    assert run_all.exit_status([passing], strict=True) == 0
    assert run_all.exit_status([passing, failing], strict=False) == 0
    assert run_all.exit_status([passing, failing], strict=True) == 1
    text = rendered(run_all, [passing])
    assert "fake_bench" in text and "keel/raw" in text and "<= 1.05x" in text and "info" in text


def test_a_benchmark_that_crashes_is_an_error_row_and_a_non_zero_exit(run_all: ModuleType, tmp_path: Path) -> None:
    script = tmp_path / "broken_bench.py"
    script.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    silent = tmp_path / "silent_bench.py"
    silent.write_text("pass\n", encoding="utf-8")
    outcomes = [run_all.run(run_all.Benchmark(str(path)), quick=False) for path in (script, silent)]

    assert [o.error for o in outcomes] == ["exit status 3", "wrote no results"]
    assert run_all.exit_status(outcomes, strict=False) == 1
    assert "ERROR" in rendered(run_all, outcomes)


def test_quick_run_of_one_real_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "client_overhead"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keel benchmarks: all targets" in done.stdout
    assert "keel + JSONL, added per call" in done.stdout
    assert "1 benchmark with --quick" in done.stdout


def test_the_ideal_time_of_the_rate_limit_benchmarks_counts_the_full_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/load.py: limits on a clock 10x as fast refill a minute's worth in 6 s, and start full."""
    monkeypatch.syspath_prepend(str(BENCH))
    load = importlib.import_module("load")
    budget = load.Budget.matching(300, (598, 120), clock_speed=10)
    assert (budget.itpm, budget.otpm, budget.window) == (179_400, 36_000, 6.0)
    assert budget.per_second() == pytest.approx((50, 29_900, 6_000))
    seconds = budget.seconds_for((1_500, 1_500 * 598, 1_500 * 100))  # shorter answers: output does not bind
    assert seconds == pytest.approx({"requests": 24.0, "input tokens": 24.0, "output tokens": 19.0})
    assert budget.seconds_for((200, 200 * 598, 200 * 120)) == {"requests": 0, "input tokens": 0, "output tokens": 0}
    assert budget.limiter_limits().per == 6.0
