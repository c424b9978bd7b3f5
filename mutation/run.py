"""`make mutation`: how many deliberate mistakes in keel's decision logic the tests catch, module by module.

Two sources of mutants, over the modules listed once, in pyproject.toml's `[tool.mutmut] only_mutate`:

- mutmut (its `[tool.mutmut]` settings) mutates the function bodies;
- `table_mutator` mutates what mutmut leaves alone: module-level tables, default policies, thresholds and
  class attributes. Each of its mutants runs the same tests (`pytest_add_cli_args_test_selection`) on a copy
  of `src/` with the one module changed.

A mutant is killed when a test fails (or the run times out: a loop that never ends). Mutants listed in
`mutation/equivalents.txt` change nothing any test could observe and are left out of the score:
killed / (mutants - equivalents). The run prints that score per module and every survivor, and exits 1 when a
module is under `--target` percent (90 by default). `--module NAME` (repeatable) mutates only those modules of
the list: mutmut still collects which tests call which function over the whole selection, then tests only the
mutants of these modules.

    .venv/bin/python mutation/run.py [--module NAME ...] [--reuse] [--jobs N] [--target PERCENT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from table_mutator import Mutant, mutants

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "mutation" / "equivalents.txt"
MUTANTS_DIR = ROOT / "mutants"

# mutmut's exit codes (mutmut.stats.status_by_exit_code): which mean the tests noticed the mutant
_KILLED_CODES = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}  # failed, pytest error, timeouts, type check, crashes
_SURVIVED_CODES = {0, 5, 33}  # the tests passed, or no test ran the mutated function


@dataclass(frozen=True)
class Result:
    module: str  # "keel._modes"
    name: str
    killed: bool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="keep mutants/ from the last run: mutmut re-tests only "
                        "functions that changed (the table mutants always run)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="table mutants tested at once")
    parser.add_argument("--target", type=float, default=90.0, help="the lowest acceptable score of a module, in %%")
    parser.add_argument("--module", action="append", dest="modules", metavar="NAME", help="mutate only this module "
                        "of only_mutate (keel._budget, or _budget); repeatable; default: all of them")  # fmt: skip
    args = parser.parse_args()
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    paths = selected(settings["only_mutate"], args.modules)
    tests: list[str] = settings["pytest_add_cli_args_test_selection"]

    started = time.monotonic()
    if not args.reuse:
        shutil.rmtree(MUTANTS_DIR, ignore_errors=True)
    results = run_mutmut(paths, everything=not args.modules)
    print(f"mutmut: {len(results)} mutants in {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    table = run_table_mutants(paths, tests, args.jobs)
    print(f"table mutator: {len(table)} mutants in {time.monotonic() - started:.0f} s", flush=True)
    modules = [module_of(path) for path in paths]
    equivalents = {
        name: reason for name, reason in read_equivalents(EQUIVALENTS).items() if _module_of_mutant(name) in modules
    }
    return report([*results, *table], equivalents, modules, args.target)


def module_of(path: str) -> str:
    """ "src/keel/_stop.py" -> "keel._stop"."""
    return ".".join(Path(path).relative_to("src").with_suffix("").parts)


def selected(paths: list[str], names: list[str] | None) -> list[str]:
    """The paths of only_mutate whose module is one of `names` ("keel._budget", or its last part "_budget"); all of
    them without names."""
    if not names:
        return paths
    unknown = [name for name in names if not any(_is_module(path, name) for path in paths)]
    if unknown:
        sys.exit(f"not in [tool.mutmut] only_mutate: {', '.join(unknown)}")
    return [path for path in paths if any(_is_module(path, name) for name in names)]


def _is_module(path: str, name: str) -> bool:
    module = module_of(path)
    return module == name or module.endswith(f".{name}")


def _module_of_mutant(name: str) -> str:
    """ "keel._modes.x_choose_mode__mutmut_7" (mutmut's) or "keel._modes BATCH_WINDOW_SECONDS: 24 -> 25" (the table
    mutator's) -> "keel._modes"."""
    if " " in name:
        return name.split(" ", 1)[0]
    return name.rsplit(".", 1)[0]


def run_mutmut(paths: list[str], *, everything: bool) -> list[Result]:
    MUTANTS_DIR.mkdir(exist_ok=True)
    log = MUTANTS_DIR / "mutmut-run.log"
    names = [] if everything else [f"{module_of(path)}.*" for path in paths]  # mutmut's names: MODULE.FUNCTION...
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", *names], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {done.returncode}; see {log}")
    results: list[Result] = []
    for path in paths:
        codes: dict[str, int | None] = json.loads((MUTANTS_DIR / f"{path}.meta").read_text())["exit_code_by_key"]
        for name, code in codes.items():
            if code not in _KILLED_CODES | _SURVIVED_CODES:
                sys.exit(f"mutmut left {name} with exit code {code}: not checked, or suspicious; run it again")
            results.append(Result(module_of(path), name, code in _KILLED_CODES))
    return results


# imported once by this process, before any mutant: each mutant's tests run in a fork of it, which then imports
# only keel (from the mutant's copy of src/) and the tests, instead of a whole interpreter's worth of packages
PRELOADED = ("pytest", "pytest_asyncio", "hypothesis", "anthropic", "httpx2", "pydantic", "starlette.applications",
             "tenacity", "typer", "rich")  # fmt: skip


@dataclass
class _Job:
    mutant: Mutant
    where: Path
    stage: list[str]  # the test files this fork runs
    started: float


def run_table_mutants(paths: Iterable[str], tests: list[str], jobs: int) -> list[Result]:
    made = [mutant for path in paths for mutant in mutants(module_of(path), (ROOT / path).read_text("utf-8"))]
    for name in PRELOADED:
        importlib.import_module(name)
    started = time.monotonic()
    if _wait(_fork_pytest(ROOT / "src", tests), timeout=600) != 0:
        sys.exit("the tests fail without any mutant: fix them first")
    timeout = 10 * (time.monotonic() - started) + 30
    results: list[Result] = []
    running: dict[int, _Job] = {}
    waiting = list(enumerate(made))
    with tempfile.TemporaryDirectory(prefix="keel-mutants-") as scratch:
        while waiting or running:
            while waiting and len(running) < jobs:
                number, mutant = waiting.pop(0)
                job = _start(mutant, Path(scratch) / str(number), tests)
                running[_fork_pytest(job.where, job.stage)] = job
            pid, code = _reap(running, timeout)
            job = running.pop(pid)
            if code == 0 and job.stage != tests:  # its own tests passed: now all of them
                running[_fork_pytest(job.where, tests)] = _Job(job.mutant, job.where, tests, time.monotonic())
                continue
            shutil.rmtree(job.where)
            results.append(Result(job.mutant.module, job.mutant.name, code != 0))
            if len(results) % 25 == 0:
                print(f"  table mutator: {len(results)}/{len(made)}", flush=True)
    order = {mutant.name: number for number, mutant in enumerate(made)}
    return sorted(results, key=lambda result: order[result.name])


def _own_tests(module: str, tests: list[str]) -> list[str]:
    """The test files named after the module (keel._error_map: test_decisions_errors.py, test_errors.py)."""
    words = [word for word in module.rsplit(".", 1)[-1].split("_") if word]
    return [test for test in tests if any(word in Path(test).stem for word in words)]


def _start(mutant: Mutant, where: Path, tests: list[str]) -> _Job:
    """A copy of src/ with the mutant in it; its first run is the module's own tests (quick, and most mutants
    fail there), when it has some."""
    shutil.copytree(ROOT / "src", where)
    (where / Path(*mutant.module.split("."))).with_suffix(".py").write_text(mutant.source, "utf-8")
    return _Job(mutant, where, _own_tests(mutant.module, tests) or tests, time.monotonic())


def _fork_pytest(src: Path, tests: list[str]) -> int:
    """The pid of a fork running pytest over `tests`, with keel imported from `src`; its exit code is pytest's."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            sys.dont_write_bytecode = True
            sys.path.insert(0, str(src))
            os.chdir(ROOT)
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
        finally:
            os._exit(code)
    return pid


def _reap(running: dict[int, _Job], timeout: float) -> tuple[int, int | None]:
    """The next fork to end, and its exit code (None: it ran past `timeout` and was killed)."""
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, os.waitstatus_to_exitcode(status)
        for pid, job in running.items():
            if time.monotonic() - job.started > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return pid, None
        time.sleep(0.02)


def _wait(pid: int, timeout: float) -> int | None:
    return _reap({pid: _Job(Mutant("", "", ""), ROOT, [], time.monotonic())}, timeout)[1]


def read_equivalents(path: Path) -> dict[str, str]:
    """mutant name -> why no test can tell it from the code: `NAME :: REASON` lines; `#` starts a comment."""
    equivalents: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, reason = line.partition(" :: ")
        if not separator or not reason.strip():
            sys.exit(f"{path}:{number}: expected 'MUTANT :: REASON'")
        equivalents[name.strip()] = reason.strip()
    return equivalents


def report(results: list[Result], equivalents: dict[str, str], modules: list[str], target: float) -> int:
    by_name = {result.name: result for result in results}
    stale = sorted(name for name in equivalents if name not in by_name or by_name[name].killed)
    counts: dict[str, Counter[str]] = {module: Counter() for module in modules}
    for result in results:
        status = "killed" if result.killed else "equivalent" if result.name in equivalents else "survived"
        counts[result.module][status] += 1
    print("\n| module | mutants | killed | equivalent | survived | score |\n|---|---|---|---|---|---|")
    low = []
    for module in modules:
        count = counts[module]
        total = count["killed"] + count["survived"]
        score = 100.0 * count["killed"] / total if total else 100.0
        if score < target:
            low.append(module)
        print(f"| `{module}` | {count.total()} | {count['killed']} | {count['equivalent']} | {count['survived']} "
              f"| {score:.1f}% |")  # fmt: skip
    survivors = [result.name for result in results if not result.killed and result.name not in equivalents]
    print(f"\n{len(survivors)} survivors (`.venv/bin/mutmut show NAME` shows a mutmut mutant's change):")
    for name in survivors:
        print(f"  {name}")
    for name in stale:
        print(f"stale in {EQUIVALENTS.name}: {name} (killed, or no longer made): remove it")
    if low:
        print(f"\nunder the {target:g}% target: {', '.join(low)}")
    return 1 if low or stale else 0


if __name__ == "__main__":
    sys.exit(main())
