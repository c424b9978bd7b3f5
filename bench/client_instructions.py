"""Instructions per standard call (valgrind's callgrind): the bare SDK, the SDK with a pass-through middleware, and
keel.Client without a records file, over the canned transport of `client_overhead.py`.

A count of instructions does not move with the load other processes put on the machine, so it tells small changes
to keel's per-call work apart where timings cannot. The script runs itself under callgrind with instrumentation off,
warms every side up, then for each side counts only its calls (`callgrind_control` switches counting on and off and
dumps the count). A side that calls nothing is measured the same way and subtracted (the switching itself).

Run: `.venv/bin/python bench/client_instructions.py` (needs valgrind: `apt-get install valgrind`; 2-4 minutes)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SIDES = ("nothing", "raw SDK", "SDK + pass-through middleware", "keel")


def make_sides() -> dict[str, Callable[[], object]]:
    import anthropic
    import httpx2
    from anthropic._middleware import CallNext, Middleware
    from anthropic._request import APIRequest
    from anthropic._response import APIResponse
    from client_overhead import PARAMS, canned

    from keel import Client

    class PassThrough(Middleware):
        def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[object]:
            return call_next(request)

    http = httpx2.Client(transport=httpx2.MockTransport(canned), base_url="http://canned")
    sdk = anthropic.Anthropic(api_key="canned", base_url="http://canned", http_client=http)
    with_middleware = sdk.with_options(middleware=[PassThrough()])
    keel = Client(sdk)
    return {
        "nothing": lambda: None,
        "raw SDK": lambda: sdk.messages.create(**PARAMS),
        "SDK + pass-through middleware": lambda: with_middleware.messages.create(**PARAMS),
        "keel": lambda: keel.messages.create(**PARAMS),
    }


def measure(calls: int, warmup: int) -> None:
    """Under callgrind: each side's calls counted and dumped, in the order of SIDES."""
    import gc

    def control(*what: str) -> None:
        subprocess.run(["callgrind_control", *what, str(os.getpid())], stdout=subprocess.DEVNULL, check=True)

    sides = make_sides()
    for call in sides.values():
        for _ in range(warmup):
            call()
    for name in SIDES:
        call = sides[name]
        gc.collect()
        control("--zero")
        control("--instr=on")
        for _ in range(calls):
            call()
        control("--instr=off")
        control("--dump")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Instructions per call under callgrind: the SDK and keel.Client.")
    parser.add_argument("--calls", type=int, default=300, help="counted calls per side (default 300)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per side (default 50)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the run under callgrind
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.calls, args.warmup)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        command += [sys.executable, __file__, "--measure", "--calls", str(args.calls), "--warmup", str(args.warmup)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
        totals = [int(match[1]) for dump in dumps if (match := re.search(r"^totals: (\d+)", dump.read_text(), re.M))]
    per_call = {name: (total - totals[0]) / args.calls for name, total in zip(SIDES, totals, strict=True)}
    raw = per_call["raw SDK"]
    print(f"instructions per standard call, {args.calls} calls a side after {args.warmup} of warm-up (callgrind)")
    for name in SIDES[1:]:
        added = per_call[name] - raw
        over = f"  (+{added:,.0f} over the raw SDK, {per_call[name] / raw:.3f}x)" if added else ""
        print(f"{name:<32}{per_call[name]:>12,.0f}{over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
