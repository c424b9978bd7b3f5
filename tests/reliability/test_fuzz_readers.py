"""Fuzz: keel's file readers under hypothesis, with malformed and adversarial files: the JSONL input of `keel batch
run` / `keel run`, the records `keel report` reads, the emulator's fault scenarios (and the `x-keel-fault` header),
and cassettes. Each is fed valid lines broken at random (a field given any JSON value, a line cut short, bytes that
are not UTF-8, nesting thousands deep, numbers out of range) between arbitrary text.

Required of each reader: no crash (only its own error type escapes), a bad line named by its line number, and the
good lines around a bad one still read (where the reader goes on past a bad line: inputs and records)."""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import scale
from test_cassette import exchange

from keel import Client
from keel._report import BadLine, summarize
from keel.batch.inputs import Defaults, Item, Reject, read_items
from keel.emulator import Emulator, client
from keel.emulator.cassette import CassetteError, header_line, read_cassette
from keel.emulator.faults import Fault, FaultSpecError, load_scenario, parse_fault_header

FUZZ = settings(
    max_examples=scale(60, 2000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
ADVERSARIAL = st.sampled_from(
    [
        b"[" * 5000,
        b'{"a":' * 5000,
        b"\xff\xfe not utf-8",
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"1e999999",
        b"NaN",
        b"-Infinity",
        b"\x00",
        b'"\\ud800"',  # a lone surrogate
        b"9" * 5000,
        b"{}",
        b"[]",
        b"null",
    ]
)


def mutated(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid line with fields given any JSON value, dropped or added, as a JSON line or cut short."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        line = dict(valid)
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from([*line, "extra"]) | st.text(max_size=8))
            if draw(st.booleans()):
                line[key] = draw(JSON)
            else:
                line.pop(key, None)
        text = json.dumps(line, ensure_ascii=draw(st.booleans())).encode()
        return text[: draw(st.integers(0, len(text)))] if draw(st.integers(0, 9)) == 0 else text

    return build()


def lines_of(valid: dict[str, Any]) -> st.SearchStrategy[list[bytes]]:
    garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")) | st.text(max_size=40).map(
        lambda t: t.replace("\n", " ").encode("utf-8", "surrogatepass")
    )
    line = (
        st.just(json.dumps(valid).encode())
        | mutated(valid)
        | garbage
        | ADVERSARIAL
        | JSON.map(lambda v: json.dumps(v).encode())
    )
    return st.lists(line, min_size=1, max_size=12)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A file each example writes afresh (so sharing the fixture between examples is harmless)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "fuzzed.jsonl"


def write(path: Path, lines: list[bytes]) -> set[int]:
    """Write the lines; the numbers of those that are not blank."""
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {number for number, line in enumerate(b"\n".join(lines).split(b"\n"), 1) if line.strip()}


INPUT_LINE = {"custom_id": "q1", "prompt": "Question 1", "max_tokens": 20, "model": "claude-haiku-5-5"}


@FUZZ
@given(lines=lines_of(INPUT_LINE))
def test_the_input_reader_accepts_or_rejects_every_line_by_its_number_and_never_crashes(
    scratch: Path, lines: list[bytes]
) -> None:
    numbers = write(scratch, lines)
    seen: set[str] = set()
    read: dict[int, Item | Reject] = {}
    for entry in read_items(scratch, Defaults("claude-haiku-5-5", 20), 256_000, seen):
        assert entry.line not in read  # one answer a line
        read[entry.line] = entry
        if isinstance(entry, Item):
            seen.add(entry.custom_id)
            json.loads(entry.params_json.encode())  # what is sent: UTF-8 JSON
        else:
            assert entry.reason.strip()
    assert set(read) == numbers  # every line that is not blank, the good ones after a bad one too


@pytest.fixture(scope="module")
def record_line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A call record as keel writes it (one call through keel to the emulator)."""
    path = tmp_path_factory.mktemp("records") / "records.jsonl"
    keel = Client(client(Emulator()), records=path)
    keel.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    keel.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return next(record for record in records if record.get("kind") == "call")


@FUZZ
@given(data=st.data())
def test_the_records_reader_reports_each_bad_line_by_its_number_and_sums_the_rest(
    scratch: Path, record_line: dict[str, Any], data: st.DataObject
) -> None:
    lines = data.draw(lines_of(record_line))
    numbers = write(scratch, lines)
    bad: list[BadLine] = []
    summary = summarize(scratch, on_bad=bad.append)
    assert {line.number for line in bad} <= numbers and len(bad) == summary.bad_lines
    assert all(str(line).startswith(f"{scratch}:{line.number}: ") and line.reason for line in bad)
    good = sum(line == json.dumps(record_line).encode() for line in lines)
    assert summary.calls >= good  # every intact record counted, whatever surrounds it
    json.dumps(summary.as_dict())  # and the report renders


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and abs(value) == float("inf"):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


TOML_VALUE = st.recursive(
    st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)
RULE_KEYS = ["path", "model", "attempt", "probability", "limit", *(field.name for field in dataclasses.fields(Fault))]
LIMIT_KEYS = ["rpm", "itpm", "otpm", "enforce", "start", "growth", "key"]


@st.composite
def scenario_text(draw: st.DrawFn) -> str:
    """A scenario file: tables of known and unknown keys with values of any TOML type, or text at random."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    out = []
    if draw(st.booleans()):
        out.append(f"seed = {toml_value(draw(TOML_VALUE))}")
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(["[[rules]]", "[limits]", "[[limits.keys]]", "[limits.ramp]", "[other]"]))
        keys = RULE_KEYS if table == "[[rules]]" else LIMIT_KEYS
        out.append(table)
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.sampled_from(keys) | st.from_regex(r"[a-z_]{1,8}", fullmatch=True))
            out.append(f"{key} = {toml_value(draw(TOML_VALUE | st.sampled_from([429, 529, 0.5, 1, 'x'])))}")
    return "\n".join(out) + "\n"


def clear(error: Exception, path: Path) -> bool:
    """The error names the file and the line (`?` only where the key at fault cannot be found in the text: a quoted
    or dotted one), then says what is wrong."""
    return re.match(rf"{re.escape(str(path))}:(\d+|\?): \S", str(error)) is not None


@FUZZ
@given(text=scenario_text())
def test_the_scenario_parser_loads_a_file_or_names_its_line_and_never_crashes(scratch: Path, text: str) -> None:
    path = scratch.with_suffix(".toml")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        scenario = load_scenario(path)
    except FaultSpecError as err:
        assert clear(err, path), str(err)
        return
    Emulator().config.scenario = scenario  # a scenario that loaded is one an emulator runs with
    for rule in scenario.rules:
        rule.fault.status_error()
        rule.fault.describe()


@FUZZ
@given(
    header=st.text(max_size=60)
    | st.lists(st.sampled_from([*RULE_KEYS, "x"]), max_size=4).map(
        lambda keys: "; ".join(f"{key}={value}" for key, value in zip(keys, ["529", "-1", "abc", "1e9"], strict=False))
    )
)
def test_the_fault_header_parses_or_says_what_is_wrong_and_never_crashes(header: str) -> None:
    try:
        parse_fault_header(header)
    except FaultSpecError as err:
        assert str(err).strip()


@pytest.fixture(scope="module")
def cassette_lines() -> tuple[dict[str, Any], dict[str, Any]]:
    """A cassette's header line and one exchange, as `keel proxy --record` writes them."""
    return header_line(None), exchange().to_json()


@FUZZ
@given(data=st.data())
def test_the_cassette_reader_reads_a_cassette_or_names_the_bad_line_and_never_crashes(
    scratch: Path, cassette_lines: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    header, exchange = cassette_lines
    first = data.draw(st.just(json.dumps(header).encode()) | mutated(header) | ADVERSARIAL)
    write(scratch, [first, *data.draw(lines_of(exchange))])
    try:
        cassette = read_cassette(scratch)
    except CassetteError as err:
        assert clear(err, scratch), str(err)
        return
    for each in cassette.exchanges:
        assert each.describe() and isinstance(each.to_json(), dict)


def test_the_readers_say_where_a_deeply_nested_line_is(scratch: Path) -> None:
    """The adversarial line hypothesis draws least often, checked every run: nesting deeper than Python recurses."""
    numbers = write(scratch, [json.dumps(INPUT_LINE).encode(), b"[" * 100_000, json.dumps(INPUT_LINE).encode()])
    entries = list(read_items(scratch, Defaults("claude-haiku-5-5", 20), 256_000, set()))
    assert [entry.line for entry in entries] == sorted(numbers)
    assert isinstance(entries[1], Reject) and "not valid JSON" in entries[1].reason
