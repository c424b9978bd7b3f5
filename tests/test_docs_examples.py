"""Every ```python block of README.md and docs/*.md runs as written (offline, against the emulator).

Each file's blocks run in order in one fresh interpreter (so a snippet cannot lean on what the test process
has imported), in an empty directory; a block that defines `def test_` functions is a pytest module and runs
under pytest instead (a file's pytest modules in one pytest run). A block that is deliberately not runnable
carries `<!-- not run: reason -->` on the line before its opening fence.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")

# Runs the blocks in one namespace; a failure prints which block failed (its traceback names it as well).
RUNNER = """
import json, sys, traceback
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    try:
        exec(compile(block["code"], block["where"], "exec"), namespace)
    except BaseException as err:
        traceback.print_exc()
        sys.exit(f"{block['where']} failed: {type(err).__name__}: {err}")
"""


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    number: int  # 1-based among the file's python blocks
    line: int  # of the opening fence
    code: str
    not_run: str | None  # the reason given in a `<!-- not run: ... -->` marker

    @property
    def where(self) -> str:
        return f"{self.doc} python block {self.number} (line {self.line})"

    @property
    def is_pytest_module(self) -> bool:
        return re.search(r"^def test_", self.code, re.M) is not None


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for number, match in enumerate(FENCE.finditer(text), 1):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        doc = str(path.relative_to(ROOT))
        blocks.append(Block(doc, number, line, match.group(1), marker.group(1) if marker else None))
    return blocks


def _runnable(path: Path) -> list[Block]:
    return [block for block in python_blocks(path) if block.not_run is None]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


SCRIPT_DOCS = [path for path in DOCS if any(not block.is_pytest_module for block in _runnable(path))]
PYTEST_BLOCKS = [block for path in DOCS for block in _runnable(path) if block.is_pytest_module]
PYTEST_DOCS = [path for path in DOCS if any(block.is_pytest_module for block in _runnable(path))]


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.index("make demo") < text.index("## keel.Client")
    assert "make test" in text[: text.index("## keel.Client")]


def test_the_examples_are_found() -> None:
    found = {_id(path): len(python_blocks(path)) for path in DOCS}
    assert found["README.md"] >= 8 and found["docs/records.md"] >= 2 and found["docs/emulator.md"] >= 1, found
    assert len(PYTEST_BLOCKS) >= 1


def test_blocks_left_out_say_why() -> None:
    for path in DOCS:
        for block in python_blocks(path):
            assert block.not_run is None or block.not_run.strip(), f"{block.where}: `not run` without a reason"


def test_examples_import_the_emulator_from_keel_emulator() -> None:
    """The emulator is leaving the top-level `keel` namespace: examples must not reach it through `keel`."""
    top_level = re.compile(
        r"\bkeel\.(Emulator|EmulatorConfig|Scenario|load_scenario)\b|^from keel import .*\bEmulator", re.M
    )
    for path in DOCS:
        for block in python_blocks(path):
            assert not top_level.search(block.code), f"{block.where}: import the emulator from keel.emulator"


def run_blocks(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    blocks = [block for block in _runnable(path) if not block.is_pytest_module]
    listing = cwd / "blocks.json"
    listing.write_text(json.dumps([{"where": block.where, "code": block.code} for block in blocks]))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(listing)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        failed = done.stderr.strip().rsplit("\n", 1)[-1]
        pytest.fail(f"{failed}\n\n{done.stderr}", pytrace=False)
    return done


@pytest.mark.parametrize("path", SCRIPT_DOCS, ids=_id)
def test_python_blocks_run(path: Path, tmp_path: Path) -> None:
    done = run_blocks(path, tmp_path)
    if path.name == "README.md":
        assert (tmp_path / ".keel" / "records.jsonl").stat().st_size > 0
        assert "['example to']" in done.stdout.splitlines()  # the tool ran once for two identical tool calls
    if path.name == "records.md":
        logged = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert any(entry.get("kind") == "call" and entry["request_id"].startswith("req_") for entry in logged)
    if path.name == "emulator.md":
        assert "q1 succeeded" in done.stdout.splitlines()


@pytest.mark.parametrize("path", PYTEST_DOCS, ids=_id)
def test_pytest_examples_pass(path: Path, pytester: pytest.Pytester) -> None:
    blocks = [block for block in _runnable(path) if block.is_pytest_module]
    pytester.makepyfile(**{f"test_example_{block.number}": block.code for block in blocks})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    tests = sum(len(re.findall(r"^def test_", block.code, re.M)) for block in blocks)
    if result.ret != 0 or result.parseoutcomes().get("passed") != tests:
        output = result.stdout.str()
        failed = [block.where for block in blocks if f"test_example_{block.number}.py::" in output]
        pytest.fail(f"{', '.join(failed) or _id(path)} failed under pytest:\n{output}", pytrace=False)
