"""`import keel` wall time in fresh interpreters, against `python -c "pass"`, and what it pulls in.

1. Wall time of `python -c "import keel"`, of `python -c "pass"` (the interpreter's own start-up) and of
   `python -c "import anthropic"` (the SDK keel is built on, which keel imports in any case), each in a fresh
   subprocess of this Python, the three taking turns run by run (in forward, then reverse order) after a warm-up.
   Reported as the median of each and the differences, in ms; no target (figures for information).
2. Whether `import keel` imports `keel.emulator`, `starlette` and `uvicorn` (`sys.modules` in a fresh subprocess).
   Target: neither `keel.emulator` nor `starlette` (the emulator and its web stack load only when asked for);
   `uvicorn` is reported for information.
3. `keel --help`: its wall time, taking turns with the others, and whether it imports the SDK, the emulator or its
   web stack (target: none of them). `--before-src DIR` also times `keel --help` of another tree's `src` (e.g. an
   older commit's, from `git archive`) in the same run, with `PYTHONPATH=DIR`.

Run: `.venv/bin/python bench/import_time.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from targets import Result, add_arguments, check, finish, info, print_verdicts

MUST_NOT_IMPORT = ("keel.emulator", "starlette")
WATCHED = (*MUST_NOT_IMPORT, "uvicorn")  # uvicorn: reported, no target
HELP_MUST_NOT_IMPORT = ("anthropic", "keel.emulator", "starlette", "uvicorn")
LIST_MODULES = "import json, sys; import keel; print(json.dumps(sorted(sys.modules)))"
KEEL_HELP = "import sys; sys.argv = ['keel', '--help']; from keel.cli import main\ntry: main()\nexcept SystemExit: pass"
HELP_MODULES = KEEL_HELP + "\nprint(__import__('json').dumps(sorted(sys.modules)))"
BEFORE = "keel --help (--before-src)"


def timed(code: str, pythonpath: str | None = None) -> float:
    """Seconds for `python -c code` in a fresh interpreter, from spawn to exit (`pythonpath`: put first on the path)."""
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def loaded_modules(code: str = LIST_MODULES) -> set[str]:
    """The modules in `sys.modules` after `code` (which prints them last), in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='`import keel` time against `python -c "pass"`, and what it imports.')
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each command first (default 2)")
    parser.add_argument("--before-src", metavar="DIR", help="also time `keel --help` of this tree's src, side by side")
    add_arguments(parser)
    args = parser.parse_args(argv)

    codes = {
        "import keel": "import keel",
        "pass": "pass",
        "import anthropic": "import anthropic",
        "keel --help": KEEL_HELP,
    }
    paths = {label: None for label in codes}
    if args.before_src:
        codes[BEFORE], paths[BEFORE] = KEEL_HELP, args.before_src
    commands = tuple(codes)
    for _ in range(args.warmup):
        for label in commands:
            timed(codes[label], paths[label])
    seconds: dict[str, list[float]] = {label: [] for label in commands}
    for n in range(args.runs):
        for label in commands if n % 2 == 0 else commands[::-1]:
            seconds[label].append(timed(codes[label], paths[label]))
    keel_ms = statistics.median(seconds["import keel"]) * 1000
    base_ms = statistics.median(seconds["pass"]) * 1000
    sdk_ms = statistics.median(seconds["import anthropic"]) * 1000
    help_ms = statistics.median(seconds["keel --help"]) * 1000
    modules = loaded_modules()
    help_modules = loaded_modules(HELP_MODULES)
    help_imports = [
        name for name in HELP_MUST_NOT_IMPORT if any(m == name or m.startswith(name + ".") for m in help_modules)
    ]

    print(f"keel import time: Python {platform.python_version()}; median of {args.runs} fresh interpreters each")
    for code in commands:
        runs = sorted(s * 1000 for s in seconds[code])
        label = f"{code}:" if code.startswith("keel") else f'python -c "{code}":'
        print(f"{label:<31}{statistics.median(runs):8.1f} ms   (range {runs[0]:.1f}–{runs[-1]:.1f})")
    print(f"{'keel minus pass:':<31}{keel_ms - base_ms:8.1f} ms")
    print(f"{'keel minus anthropic:':<31}{keel_ms - sdk_ms:8.1f} ms")
    print(f"modules in sys.modules after `import keel`: {len(modules)}")
    print("imported by `import keel`: " + ", ".join(f"{name} {yes_no(name in modules)}" for name in WATCHED))
    print("imported by `keel --help`: " + (", ".join(help_imports) or "none of " + ", ".join(HELP_MUST_NOT_IMPORT)))
    print()
    results: list[Result] = [
        info(f"import keel, median of {args.runs}", keel_ms, "ms", 1),
        info(f'python -c "pass", median of {args.runs}', base_ms, "ms", 1),
        info('import keel minus "pass"', keel_ms - base_ms, "ms", 1),
        info(f"import anthropic, median of {args.runs}", sdk_ms, "ms", 1),
        info('import keel minus "import anthropic"', keel_ms - sdk_ms, "ms", 1),
        info(f"keel --help, median of {args.runs}", help_ms, "ms", 1),
    ]
    if args.before_src:
        results.append(info(f"{BEFORE}, median of {args.runs}", statistics.median(seconds[BEFORE]) * 1000, "ms", 1))
    results.append(
        check(
            "keel --help imports the SDK, the emulator or its web stack",
            ", ".join(help_imports) or "no",
            "no",
            not help_imports,
        )
    )
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
