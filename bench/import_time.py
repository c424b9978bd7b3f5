"""`import keel` wall time in fresh interpreters, against `python -c "pass"`, and what it pulls in.

1. Wall time of `python -c "import keel"`, of `python -c "pass"` (the interpreter's own start-up) and of
   `python -c "import anthropic"` (the SDK keel is built on, which keel imports in any case), each in a fresh
   subprocess of this Python, the three taking turns run by run (in forward, then reverse order) after a warm-up.
   Reported as the median of each and the differences, in ms; no target (figures for information).
2. Whether `import keel` imports `keel.emulator`, `starlette` and `uvicorn` (`sys.modules` in a fresh subprocess).
   Target: neither `keel.emulator` nor `starlette` (the emulator and its web stack load only when asked for);
   `uvicorn` is reported for information.

Run: `.venv/bin/python bench/import_time.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

from targets import Result, add_arguments, check, finish, info, print_verdicts

MUST_NOT_IMPORT = ("keel.emulator", "starlette")
WATCHED = (*MUST_NOT_IMPORT, "uvicorn")  # uvicorn: reported, no target
LIST_MODULES = "import json, sys; import keel; print(json.dumps(sorted(sys.modules)))"


def timed(code: str) -> float:
    """Seconds for `python -c code` in a fresh interpreter, from spawn to exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def loaded_modules() -> set[str]:
    """The modules in `sys.modules` after `import keel`, in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", LIST_MODULES], check=True, capture_output=True, text=True)
    return set(json.loads(done.stdout))


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='`import keel` time against `python -c "pass"`, and what it imports.')
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each command first (default 2)")
    add_arguments(parser)
    args = parser.parse_args(argv)

    commands = ("import keel", "pass", "import anthropic")
    for _ in range(args.warmup):
        for code in commands:
            timed(code)
    seconds: dict[str, list[float]] = {code: [] for code in commands}
    for n in range(args.runs):
        for code in commands if n % 2 == 0 else commands[::-1]:
            seconds[code].append(timed(code))
    keel_ms = statistics.median(seconds["import keel"]) * 1000
    base_ms = statistics.median(seconds["pass"]) * 1000
    sdk_ms = statistics.median(seconds["import anthropic"]) * 1000
    modules = loaded_modules()

    print(f"keel import time: Python {platform.python_version()}; median of {args.runs} fresh interpreters each")
    for code in commands:
        runs = sorted(s * 1000 for s in seconds[code])
        label = f'python -c "{code}":'
        print(f"{label:<31}{statistics.median(runs):8.1f} ms   (range {runs[0]:.1f}–{runs[-1]:.1f})")
    print(f"{'keel minus pass:':<31}{keel_ms - base_ms:8.1f} ms")
    print(f"{'keel minus anthropic:':<31}{keel_ms - sdk_ms:8.1f} ms")
    print(f"modules in sys.modules after `import keel`: {len(modules)}")
    print("imported by `import keel`: " + ", ".join(f"{name} {yes_no(name in modules)}" for name in WATCHED))
    print()
    results: list[Result] = [
        info(f"import keel, median of {args.runs}", keel_ms, "ms", 1),
        info(f'python -c "pass", median of {args.runs}', base_ms, "ms", 1),
        info('import keel minus "pass"', keel_ms - base_ms, "ms", 1),
        info(f"import anthropic, median of {args.runs}", sdk_ms, "ms", 1),
        info('import keel minus "import anthropic"', keel_ms - sdk_ms, "ms", 1),
    ]
    for name in WATCHED:
        imported = yes_no(name in modules)
        if name in MUST_NOT_IMPORT:
            results.append(check(f"import keel imports {name}", imported, "no", name not in modules))
        else:
            results.append(Result(f"import keel imports {name}", imported, None, None, None))
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
