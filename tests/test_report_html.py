"""`keel report --html`: the page's numbers against the records, its escaping, its bounded summary, and the charts
as headless Chromium draws them."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from report_helpers import Traffic, make_traffic, nearest_rank
from typer.testing import CliRunner

from keel import _error_map
from keel._report import FAILURES_KEPT, Timeline, error_verdict, summarize
from keel._report_html import render_html
from keel.cli import app
from keel.emulator import Emulator


@pytest.fixture
def traffic(keel_emulator: Emulator, tmp_path: Path) -> Traffic:
    return make_traffic(keel_emulator, tmp_path)


# --- a small DOM, from the standard library's parser --------------------------------------------------

_VOID = {"meta", "link", "br", "img", "input", "hr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(child.text for child in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        def matches(node: Node) -> bool:
            classes = node.attrs.get("class", "").split()
            return node.tag == tag and all(
                value in classes if name == "class_" else node.attrs.get(name.replace("_", "-")) == value
                for name, value in attrs.items()
            )

        return [node for node in self.walk() if matches(node)]

    def find(self, tag: str, **attrs: str) -> Node:
        (found,) = self.find_all(tag, **attrs)
        return found


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text_parts.append(data)


def parse(page: str) -> Node:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "an element was left open"
    return builder.root


def rows(table: Node) -> list[list[Node]]:
    return [row.find_all("td") for row in table.find("tbody").find_all("tr")]


def write_page(records: Path, page: Path) -> Node:
    result = CliRunner().invoke(app, ["report", str(records), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert f"wrote {page}" in result.stderr
    return parse(page.read_text(encoding="utf-8"))


# --- the page's content ----------------------------------------------------------------------------


def test_the_page_shows_the_records_percentiles_counts_tokens_and_failures(traffic: Traffic, tmp_path: Path) -> None:
    dom = write_page(traffic.path, tmp_path / "report.html")
    calls = traffic.calls
    ok = [c for c in calls if c.error_class is None]

    latency = {row[0].text: row for row in rows(dom.find("table", id="latency-table"))}
    groups = {
        "latency: all": [c.latency_ms for c in ok],
        "latency: standard": [c.latency_ms for c in ok if c.mode == "standard"],
        "latency: stream": [c.latency_ms for c in ok if c.mode == "stream"],
        "time to first token: stream": [c.ttft_ms for c in ok if c.ttft_ms is not None],
    }
    assert set(latency) == set(groups)
    for name, values in groups.items():
        row = latency[name]
        assert row[1].text == f"{len(values):,}"
        for cell, q in zip(row[2:], (0.5, 0.95, 0.99), strict=True):
            truth = nearest_rank(values, q)
            (shown,) = cell.find_all("span")
            assert float(shown.attrs["data-ms"]) == truth and shown.text == f"{truth:,.1f}"
    # the distributions mark the same percentiles
    for chart, values in (("latency", groups["latency: all"]), ("ttft", groups["time to first token: stream"])):
        markers = dom.find("svg", data_chart=chart).find_all("line", class_="marker")
        assert {m.attrs["data-label"]: float(m.attrs["data-value"]) for m in markers} == {
            label: nearest_rank(values, q) for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        }
        assert sum(
            int(bar.text.replace(",", "")) for bar in dom.find("svg", data_chart=chart).find_all("title")
        ) == len(values)

    cards = {
        card.attrs["data-card"]: card.find("div", class_="value").text for card in dom.find_all("div", class_="card")
    }
    assert cards["calls"] == f"{len(calls):,}" and cards["failed"] == f"{len(calls) - len(ok):,}"
    assert cards["retries"] == f"{sum(c.retries for c in calls):,}"

    stop_bars = [t.text for t in dom.find("svg", data_chart="stop_reasons").find_all("title")]
    assert sorted(stop_bars) == sorted(f"{reason}: {n:,}" for reason, n in Counter(c.stop_reason for c in ok).items())

    spend = {(row[0].text, row[1].text): row for row in rows(dom.find("table", id="spend-table"))}
    pairs = Counter((c.model, c.mode) for c in calls)
    assert set(spend) == {*pairs, ("total", "")}
    for (model, mode), count in pairs.items():
        mine = [c for c in calls if (c.model, c.mode) == (model, mode)]
        row = [cell.text for cell in spend[model, mode]]
        assert row[2:6] == [
            f"{count:,}",
            f"{sum(c.error_class is not None for c in mine):,}",
            f"{sum(c.usage.input_tokens for c in mine):,}",
            f"{sum(c.usage.output_tokens for c in mine):,}",
        ]
    assert spend["total", ""][2].text == f"{len(calls):,}"

    (failed,) = [c for c in calls if c.error_class is not None]
    (failure,) = rows(dom.find("table", id="failures-table"))
    assert [cell.text for cell in failure] == ["spend_cap", "1", "no", _error_map.SPEND_CAP.action.value]
    block = dom.find("details", data_class="spend_cap")
    (row,) = rows(block.find("table"))
    assert row[1].text == failed.request_id and row[2].text == failed.call_id
    assert row[4].text == failed.error

    # errors over time: every error response, by class; the line's points add up to the retries
    errors = dom.find("svg", data_chart="errors")
    by_class: Counter[str] = Counter()
    retries = 0
    for title in errors.find_all("title"):
        name, _, count = title.text.partition(" · ")[2].rpartition(": ")
        if name == "retries":
            retries += int(count)
        else:
            by_class[name] += int(count)
    served = [e for e in traffic.served if e.status != 200]
    assert sum(by_class.values()) == len(served) and set(by_class) == {"overloaded", "spend_cap"}
    assert retries == sum(c.retries for c in calls)


def test_the_page_escapes_what_the_records_say(traffic: Traffic, tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script>&amp;\'"'
    first = next(json.loads(line) for line in traffic.path.read_text().splitlines() if '"kind":"call"' in line)
    record = {
        **first,
        "call_id": "call_<b>",
        "model": "<i>model</i>",
        "request_id": "req_" + hostile,
        "error_class": "<img src=x>",
        "error": hostile,
        "stop_reason": None,
    }
    path = tmp_path / "hostile.jsonl"
    path.write_text(traffic.path.read_text() + json.dumps(record) + "\n")
    page_file = tmp_path / "hostile.html"
    dom = write_page(path, page_file)
    page = page_file.read_text()
    assert len(dom.find_all("script")) == 1 and not dom.find_all("img") and not dom.find_all("b")
    assert "alert" not in dom.find("script").text
    block = dom.find("details", data_class="<img src=x>")
    (row,) = rows(block.find("table"))
    assert row[1].text == "req_" + hostile and row[4].text == hostile and row[3].text.startswith("<i>model</i>")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in page


def test_the_page_lists_bad_lines_by_number(traffic: Traffic, tmp_path: Path) -> None:
    lines = traffic.path.read_text().splitlines(keepends=True)
    lines.insert(3, '{"kind": "call", "call_id": "torn\n')
    lines.insert(7, "<not json>\n")
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(lines))
    dom = write_page(path, tmp_path / "broken.html")
    table = rows(dom.find("table", id="bad-lines-table"))
    assert [(row[0].text, row[1].text.split(":")[0]) for row in table] == [
        ("4", "not a JSON record"),
        ("8", "not a JSON record"),
    ]
    assert dom.find("div", data_card="bad-lines").find("div", class_="value").text == "2"
    assert dom.find("div", data_card="calls").find("div", class_="value").text == f"{len(traffic.calls):,}"


def test_a_page_without_successful_calls_or_without_records_says_so(traffic: Traffic, tmp_path: Path) -> None:
    failed = [line for line in traffic.path.read_text().splitlines() if '"error_class":"spend_cap"' in line]
    assert len(failed) == 2  # its attempt and its call
    only_failures = tmp_path / "failures.jsonl"
    only_failures.write_text("\n".join(failed) + "\n")
    dom = write_page(only_failures, tmp_path / "failures.html")
    texts = [p.text for p in dom.find_all("p", class_="empty")]
    assert texts == ["No successful calls.", "No streamed calls.", "No messages."]
    charts = [svg.attrs["data-chart"] for svg in dom.find_all("svg", class_="chart")]
    assert not dom.find_all("table", id="latency-table") and charts == ["errors", "calls", "cost", "tokens"]
    assert dom.find("div", data_card="latency-p50").find("div", class_="value").text == "—"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    dom = write_page(empty, tmp_path / "empty.html")
    assert not dom.find_all("svg") and "no records" in dom.find("header").text
    assert [p.text for p in dom.find_all("p", class_="empty")][-1] == "No call failed."


def test_html_with_request_id_or_to_an_unwritable_place_exits_2(traffic: Traffic, tmp_path: Path) -> None:
    both = CliRunner().invoke(app, ["report", str(traffic.path), "--html", "x.html", "--request-id", "req_1"])
    assert both.exit_code == 2 and "--request-id" in both.output
    nowhere = CliRunner().invoke(app, ["report", str(traffic.path), "--html", str(tmp_path / "no" / "dir.html")])
    assert nowhere.exit_code == 2 and "cannot write" in nowhere.stderr


# --- bounded memory ----------------------------------------------------------------------------------


def synthetic_records(path: Path, calls: int) -> None:
    """`calls` calls over the same ten minutes, with the same latencies and failure classes whatever the count:
    only how many records there are changes (each failure's request_id and message are its own)."""
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0}
    usage["cache_read_tokens"] = 0
    with path.open("w") as file:
        for n in range(calls):
            failed = n % 10 == 0
            at = 1_790_000_000 + (n * 7919 % 600)
            mode = ("standard", "stream")[n % 2]
            record = {
                "call_id": f"call_{n}",
                "mode": mode,
                "policy": "interactive",
                "model": ("claude-sonnet-5-5", "claude-haiku-5-5")[n % 3 == 0],
                "request_id": f"req_{n}",
                "stop_reason": None if failed else "end_turn",
                "outcome": None if failed else "end_turn",
                "usage": usage,
                "cost_usd": None if failed else 0.0001,
                "latency_ms": 100 + (n * 31 % 97) * 9.7,
                "ttft_ms": 20 + (n * 17 % 101) if mode == "stream" else None,
                "attempts": 2,
                "retries": 1,
                "rounds": 1,
                "error_class": ("overloaded", "timeout", "server_error")[n % 3] if failed else None,
                "error": f"failure number {n}" if failed else None,
                "content": None,
                "at": at,
                "kind": "call",
            }
            attempt = {"call_id": f"call_{n}", "attempt": 1, "retry_count": 0, "endpoint": "/v1/messages"}
            attempt |= {"request_id": f"req_a{n}", "status": 529, "error_type": "overloaded_error", "error_code": None}
            attempt |= {"error_class": "overloaded", "latency_ms": 12.5, "at": at - 0.5, "kind": "attempt"}
            file.write(json.dumps(attempt) + "\n" + json.dumps(record) + "\n")


def footprint(value: Any) -> int:
    """How many values a structure holds, counted through containers and objects: what memory grows with."""
    if isinstance(value, dict):
        return len(value) + sum(footprint(k) + footprint(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset) or type(value).__name__ in ("deque", "array"):
        return len(value) + sum(footprint(item) for item in value)
    if is_dataclass(value):
        return sum(footprint(getattr(value, f.name)) for f in fields(value))
    if hasattr(value, "__dict__"):
        return footprint(vars(value))
    return 1


def test_the_summary_does_not_grow_with_the_number_of_records(tmp_path: Path) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    synthetic_records(small, 1_000)
    synthetic_records(large, 10_000)
    few, many = summarize(small, exact_limit=100), summarize(large, exact_limit=100)
    assert few.bad_lines == many.bad_lines == 0
    assert many.calls == 10 * few.calls == 10_000 and many.failed == 10 * few.failed
    assert footprint(many) == footprint(few) < 10_000
    assert [len(kept) for kept in many.latest_failures.values()] == [FAILURES_KEPT] * 3
    # the page is made from the summary alone: ten times the records, as many elements on the page
    assert len(list(parse(render_html(many)).walk())) == len(list(parse(render_html(few)).walk()))


def test_the_timeline_keeps_at_most_its_bins_and_every_count() -> None:
    timeline = Timeline()
    moments = [1_790_000_000 + (n * 7919 % 86_400) + n % 7 / 10 for n in range(5_000)]  # a day, out of order
    for moment in moments:
        timeline.at(moment).calls += 1
    assert len(timeline.series()) <= Timeline.MAX_BINS < 2 * len(timeline.series())  # widened no more than needed
    width = timeline.width_ms / 1000
    expected = Counter(math.floor(moment / width) * width for moment in moments)
    assert {start: counts.calls for start, counts in timeline.series() if counts.calls} == expected


# --- in a browser ------------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "chromium is not installed: `make test` installs it with apt-get when run as root "
            "(scripts/services.sh); without it only this rendering test is skipped"
        )
    return found


BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def test_chromium_draws_every_chart_of_the_page(traffic: Traffic, tmp_path: Path) -> None:
    browser = chromium()
    page = tmp_path / "report.html"
    static = write_page(traffic.path, page)
    charts = {svg.attrs["data-chart"]: svg for svg in static.find_all("svg", class_="chart")}
    assert set(charts) == {"latency", "ttft", "errors", "calls", "stop_reasons", "cost", "tokens"}
    result = subprocess.run(
        [browser, *BROWSER_FLAGS, "--window-size=1280,2000", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rendered = parse(result.stdout)
    assert rendered.find("html").attrs.get("data-charts") == "checked", "the page's script did not run"
    for svg in rendered.find_all("svg", class_="chart"):
        name = svg.attrs["data-chart"]
        marks = len(charts[name].find("g", class_="marks").children)
        assert marks > 0, name
        assert svg.attrs["data-drawn"] == str(marks), f"{name}: {svg.attrs['data-drawn']} of {marks} marks drawn"
        width, height = (int(side) for side in svg.attrs["data-size"].split("x"))
        assert width > 200 and height > 40, f"{name} is {width}x{height}"


def test_a_failure_class_the_error_map_does_not_know_is_shown_without_a_verdict() -> None:
    assert error_verdict("overloaded") == ("yes", _error_map.OVERLOADED.action.value)
    assert error_verdict("spend_cap") == ("no", _error_map.SPEND_CAP.action.value)
    assert error_verdict("a_class_of_a_later_version") == ("—", "—")
