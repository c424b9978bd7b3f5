"""The README's snippets run as written (offline, against the emulator)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    assert text.index("make demo") < text.index("## keel.Client")
    assert "make test" in text[: text.index("## keel.Client")]


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 7
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, block in enumerate(blocks, 1):
        if "def test_" in block:
            continue  # pytest examples are exercised by the plugin's own tests
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as err:
            pytest.fail(f"README python block {number} failed: {type(err).__name__}: {err}")
    assert (tmp_path / ".keel" / "records.jsonl").stat().st_size > 0
    assert namespace["sent"] == ["example to"]  # the tool ran once for two identical tool calls
