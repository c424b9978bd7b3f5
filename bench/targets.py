"""What a benchmark reports besides its human output: its targets and headline figures, for `bench/run_all.py`.

A benchmark adds `--json FILE` and `--strict` with `add_arguments`, builds one `Result` per figure (`at_most`,
`at_least`, `check` for a target, `info` or `note` for a figure without one) and ends with
`return finish(args, results)`: that writes the results to FILE when asked and gives the exit status (1 on a FAIL
with `--strict`, else 0).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Result:
    """One figure of a benchmark: shown as `value`, checked against `target` unless `passed` is None."""

    metric: str
    value: str  # as shown, unit included: "1.044x", "114.3 MB", "yes"
    number: float | None  # the figure itself, when it is a number
    target: str | None  # as shown: "<= 1.05x"; None for a figure without a target
    passed: bool | None  # None for a figure without a target

    @property
    def verdict(self) -> str:
        return "info" if self.passed is None else verdict(self.passed)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _shown(number: float, unit: str, digits: int) -> str:
    return f"{number:,.{digits}f}{'' if unit == 'x' else ' '}{unit}".rstrip()


def _limit(limit: float, unit: str) -> str:
    return f"{limit:,g}{'' if unit == 'x' else ' '}{unit}".rstrip()


def at_most(metric: str, number: float, limit: float, unit: str = "x", digits: int = 3) -> Result:
    return Result(metric, _shown(number, unit, digits), number, f"<= {_limit(limit, unit)}", number <= limit)


def at_least(metric: str, number: float, limit: float, unit: str = "x", digits: int = 3) -> Result:
    return Result(metric, _shown(number, unit, digits), number, f">= {_limit(limit, unit)}", number >= limit)


def info(metric: str, number: float, unit: str = "x", digits: int = 3) -> Result:
    return Result(metric, _shown(number, unit, digits), number, None, None)


def note(metric: str, value: str) -> Result:
    """A figure that is not a number, without a target, e.g. a part skipped: "skipped (no Redis)"."""
    return Result(metric, value, None, None, None)


def check(metric: str, value: str, target: str, passed: bool) -> Result:
    """A target that is not a number against a limit, e.g. "imports starlette": "yes", target "no"."""
    return Result(metric, value, None, target, passed)


def print_verdicts(results: Sequence[Result]) -> None:
    """One line per target, e.g. `create keel/raw: 1.044x (target <= 1.05x): PASS`."""
    for result in results:
        if result.passed is not None:
            print(f"{result.metric}: {result.value} (target {result.target}): {result.verdict}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the targets and headline figures to FILE as JSON"
    )


def finish(args: argparse.Namespace, results: Sequence[Result]) -> int:
    """Write the results to `--json FILE` if given; the exit status: 1 on a FAIL with `--strict`, else 0."""
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n", encoding="utf-8")
    failed = any(result.passed is False for result in results)
    return 1 if failed and args.strict else 0


def load(path: Path) -> list[Result]:
    """The results a benchmark wrote with `--json`."""
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return [Result(**row) for row in rows]
