"""`keel report` over records written by real keel calls against the emulator, and `keel explain`."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from report_helpers import MODEL, UNPRICED, Traffic, make_traffic, nearest_rank
from typer.testing import CliRunner

from keel._error_map import ERROR_TABLE
from keel._report import Percentiles
from keel._stop import STOP_TABLE, stop_row
from keel._usage import USAGE_FIELDS
from keel.cli import app
from keel.emulator import Emulator

WIDE = {"COLUMNS": "200"}


@pytest.fixture
def traffic(keel_emulator: Emulator, tmp_path: Path) -> Traffic:
    return make_traffic(keel_emulator, tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def report_json(*args: str) -> dict[str, Any]:
    result = run("report", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_report_counts_calls_attempts_latency_tokens_and_cost(traffic: Traffic) -> None:
    calls = traffic.calls
    ok = [c for c in calls if c.error_class is None]
    summary = report_json(str(traffic.path))

    assert summary["calls"]["total"] == len(calls) == 10
    assert summary["calls"]["succeeded"] == len(ok) and summary["calls"]["failed"] == len(calls) - len(ok) == 1
    assert summary["calls"]["by_mode"] == dict(Counter(c.mode for c in calls))
    assert summary["calls"]["by_model"] == dict(Counter(c.model for c in calls))
    assert summary["calls"]["by_policy"] == dict(Counter(c.policy for c in calls))
    assert summary["calls"]["by_policy"]["bulk"] == 1 and summary["calls"]["by_mode"]["stream"] == 1
    assert summary["calls"]["failures_by_error_class"] == {"spend_cap": 1}
    assert summary["calls"]["stop_reasons"] == dict(Counter(c.stop_reason for c in ok))
    assert summary["calls"]["stop_reasons"]["refusal"] == 1

    attempts = summary["attempts"]
    assert attempts["total"] == len(traffic.served) == sum(c.attempts for c in calls) == attempts["in_call_records"]
    assert attempts["retries"] == sum(c.retries for c in calls) == 6
    assert attempts["retried_calls"] == 2
    assert attempts["by_status"] == {str(k): v for k, v in Counter(e.status for e in traffic.served).items()}

    latency = summary["latency_ms"]
    for name, group in (("all", ok), ("standard", [c for c in ok if c.mode == "standard"])):
        values = [c.latency_ms for c in group]
        assert latency[name] == {
            "count": len(values),
            "p50": nearest_rank(values, 0.5),
            "p95": nearest_rank(values, 0.95),
            "p99": nearest_rank(values, 0.99),
        }
    stream = next(c for c in calls if c.mode == "stream")
    assert stream.ttft_ms is not None and 0 < stream.ttft_ms <= stream.latency_ms
    assert summary["ttft_ms"] == {"count": 1, "p50": stream.ttft_ms, "p95": stream.ttft_ms, "p99": stream.ttft_ms}

    models = summary["models"]
    for model in (MODEL, UNPRICED):
        mine = [c for c in calls if c.model == model]
        assert models[model]["calls"] == len(mine)
        assert models[model]["input_tokens"] == sum(c.usage.input_tokens for c in mine) > 0
        assert models[model]["output_tokens"] == sum(c.usage.output_tokens for c in mine) > 0
        assert models[model]["cache_write_5m_tokens"] == sum(c.usage.cache_write_5m_tokens for c in mine)
        assert models[model]["cache_write_1h_tokens"] == sum(c.usage.cache_write_1h_tokens for c in mine)
        assert models[model]["cache_read_tokens"] == sum(c.usage.cache_read_tokens for c in mine)
    priced = [c.cost_usd for c in calls if c.model == MODEL and c.cost_usd is not None]
    assert len(priced) == 7
    assert models[MODEL]["cost_usd"] == pytest.approx(sum(priced), rel=1e-12) and models[MODEL]["unpriced_calls"] == 0
    assert models[UNPRICED]["cost_usd"] is None and models[UNPRICED]["unpriced_calls"] == 2  # unknown, not 0
    assert summary["total"]["cost_usd"] == pytest.approx(sum(priced), rel=1e-12)
    assert summary["total"]["unpriced_calls"] == 2
    assert summary["lines"]["bad"] == 0


def test_report_tables(traffic: Traffic) -> None:
    result = run("report", str(traffic.path), env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "10 call(s): 9 succeeded, 1 failed" in out
    for text in ("spend_cap", "wait_for_spend_reset", "refusal", "bulk", "stream TTFT", MODEL, UNPRICED):
        assert text in out
    assert "unknown (2 unpriced)" in out  # the unpriced model's cost
    assert "+ 2 unpriced" in out  # the total: known cost plus the calls without a price
    assert result.stderr == ""


def test_request_id_of_any_attempt_finds_the_whole_call(traffic: Traffic) -> None:
    storm = traffic.storm
    first_529 = next(e for e in traffic.served if e.status == 529)
    found = report_json(str(traffic.path), "--request-id", first_529.request_id)
    assert [call["call_id"] for call in found["calls"]] == [storm.call_id]
    (call,) = found["calls"]
    assert call["call"]["request_id"] == storm.request_id and call["call"]["attempts"] == 6
    served = traffic.served[[e.request_id for e in traffic.served].index(first_529.request_id) :][:6]
    assert [a["request_id"] for a in call["attempts"]] == [e.request_id for e in served]
    assert [a["status"] for a in call["attempts"]] == [529] * 5 + [200]
    # the call's own request_id finds the same call; the tables mark the attempt that matched
    assert report_json(str(traffic.path), "--request-id", str(storm.request_id))["calls"] == found["calls"]
    result = run("report", str(traffic.path), "--request-id", first_529.request_id, env=WIDE)
    assert result.exit_code == 0 and storm.call_id in result.stdout
    assert f"{first_529.request_id} ◀" in result.stdout and result.stdout.count("◀") == 1


def test_request_id_not_found_exits_1(traffic: Traffic) -> None:
    result = run("report", str(traffic.path), "--request-id", "req_nope")
    assert result.exit_code == 1
    assert "no record" in result.stderr and "req_nope" in result.stderr


def test_bad_lines_are_reported_with_their_number_and_skipped(traffic: Traffic, tmp_path: Path) -> None:
    clean = report_json(str(traffic.path))
    lines = traffic.path.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    lines.insert(middle, '{"kind": "call", "call_id": "call_torn", "mo\n')  # a torn write
    lines.insert(middle + 3, '{"kind": "call", "call_id": "call_x"}\n')  # JSON, but not a usable record
    lines.append('{"kind": "attempt", "call_id": "c')  # the writer died mid-line
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(lines))
    result = run("report", str(broken), "--json")
    assert result.exit_code == 0, result.output
    assert f"broken.jsonl:{middle + 1}: not a JSON record" in result.stderr
    assert f"broken.jsonl:{middle + 4}: call record: missing field 'mode'" in result.stderr
    assert f"broken.jsonl:{len(lines)}: not a JSON record" in result.stderr
    assert "3 bad line(s) skipped" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["lines"]["bad"] == 3
    for section in ("calls", "attempts", "latency_ms", "ttft_ms", "models", "total"):
        assert summary[section] == clean[section]  # the good records around the bad lines all counted
    tables = run("report", str(broken), env=WIDE)
    assert tables.exit_code == 0 and "3 bad line(s) skipped" in tables.stdout and "10 call(s)" in tables.stdout


def test_since_keeps_only_later_records(traffic: Traffic, tmp_path: Path) -> None:
    records = [json.loads(line) for line in traffic.path.read_text().splitlines()]
    old = len(records) // 2
    for record in records[:old]:
        record["at"] = 946_684_800.0  # 2000-01-01T00:00:00Z
    dated = tmp_path / "dated.jsonl"
    dated.write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = report_json(str(dated), "--since", "2000-06-01T00:00:00Z")
    kept = records[old:]
    assert summary["lines"]["before_since"] == old
    assert summary["calls"]["total"] == sum(r["kind"] == "call" for r in kept)
    assert summary["attempts"]["total"] == sum(r["kind"] == "attempt" for r in kept)
    assert report_json(str(dated), "--since", "1999-12-31")["calls"]["total"] == len(traffic.calls)
    bad = run("report", str(dated), "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_a_call_without_tokens_or_model_is_not_an_unpriced_model(traffic: Traffic, tmp_path: Path) -> None:
    """A call record of an SDK call that is not a message (mode batch, no model, no usage) costs nothing."""
    first = next(json.loads(line) for line in traffic.path.read_text().splitlines() if '"kind":"call"' in line)
    zero = dict.fromkeys(USAGE_FIELDS, 0)
    poll = {**first, "mode": "batch", "model": "", "usage": zero, "cost_usd": None, "stop_reason": None}
    path = tmp_path / "batch.jsonl"
    path.write_text(traffic.path.read_text() + json.dumps({**poll, "call_id": "call_poll", "outcome": "poll"}) + "\n")
    summary = report_json(str(path))
    assert summary["calls"]["by_mode"]["batch"] == 1 and summary["models"]["(none)"]["calls"] == 1
    assert summary["models"]["(none)"]["cost_usd"] == 0 and summary["models"]["(none)"]["unpriced_calls"] == 0
    assert summary["total"]["unpriced_calls"] == 2  # still only the two calls of the unpriced model
    assert summary["calls"]["stop_reasons"] == report_json(str(traffic.path))["calls"]["stop_reasons"]


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = run("report", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_percentiles_are_exact_then_bounded_within_half_a_percent() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1.5) for _ in range(20_000)]
    exact, bounded = Percentiles(), Percentiles(exact_limit=100)
    for value in values:
        exact.add(value)
        bounded.add(value)
    assert exact.exact and not bounded.exact
    assert len(bounded._buckets) < 2_500  # memory bounded by the value range, not the count
    for q in (0.5, 0.95, 0.99, 1.0):
        truth = nearest_rank(values, q)
        assert exact.quantile(q) == truth
        estimate = bounded.quantile(q)
        assert estimate is not None and abs(estimate - truth) <= 0.006 * truth
    assert Percentiles().quantile(0.5) is None
    assert bounded.as_dict(0.5)["approximate"] is True


# --- keel explain ----------------------------------------------------------------------------------


def test_explain_without_argument_lists_the_whole_map() -> None:
    wide = run("explain", env=WIDE)
    assert wide.exit_code == 0
    for header in ("name", "status", "error.type", "error_code", "retryable", "action", "SDK retries?", "note"):
        assert header in wide.stdout
    narrow = run("explain", env={"COLUMNS": "80"})
    assert narrow.exit_code == 0
    for row in ERROR_TABLE:
        assert row.name in wide.stdout and row.name in narrow.stdout
        assert row.action.value in wide.stdout and row.action.value in narrow.stdout


def test_explain_a_status_shows_every_row_of_it() -> None:
    result = run("explain", "429", env=WIDE)
    assert result.exit_code == 0
    out = result.stdout
    assert "A bare 429 is rate_limited" in out
    for name in ("rate_limited", "spend_cap", "contract_spend_cap", "ramp_limit"):
        assert f"─ {name} ─" in out
    assert "wait_retry_after" in out and "wait_for_spend_reset" in out


def test_explain_a_name_says_keel_and_the_sdk_disagree() -> None:
    result = run("explain", "spend_cap", env=WIDE)
    assert result.exit_code == 0
    out = result.stdout
    assert "enforced_spend_limit_reached" in out and "wait_for_spend_reset" in out
    assert "keel does NOT retry it, though the SDK on its own would." in out
    assert "rate_limited" not in out


def test_explain_status_type_code() -> None:
    result = run("explain", "429:rate_limit_error:enforced_spend_limit_reached", env=WIDE)
    assert result.exit_code == 0 and "─ spend_cap ─" in result.stdout and "rate_limited" not in result.stdout
    unknown_code = run("explain", "529:overloaded_error:brand_new_code", env=WIDE)
    assert unknown_code.exit_code == 0 and "─ overloaded ─" in unknown_code.stdout
    assert "brand_new_code is not one keel knows" in unknown_code.stdout
    teapot = run("explain", "418", env=WIDE)
    assert teapot.exit_code == 0 and "─ unknown_4xx ─" in teapot.stdout


@pytest.mark.parametrize("what", ["nonsense", "999", "429:a:b:c", "x:rate_limit_error"])
def test_explain_unknown_exits_2_listing_the_names(what: str) -> None:
    result = run("explain", what)
    assert result.exit_code == 2
    assert f"{what!r} is not a term keel knows" in result.stderr
    assert all(row.name in result.stderr for row in ERROR_TABLE)
    assert all(row.kind in result.stderr for row in STOP_TABLE)
    assert result.stdout == ""


@pytest.mark.parametrize("kind", [row.kind for row in STOP_TABLE])
def test_explain_a_stop_reason_from_the_stop_table(kind: str) -> None:
    result = run("explain", kind, env=WIDE)
    row = stop_row(kind)
    assert result.exit_code == 0 and row is not None
    assert f"stop_reason {kind}" in result.stdout
    assert row.meaning in result.stdout and row.todo in result.stdout and row.outcome.__name__ in result.stdout


def test_explain_a_request_id_finds_its_call_in_the_records(traffic: Traffic) -> None:
    spend_cap, refusal = traffic.calls[6], traffic.calls[7]
    assert spend_cap.request_id is not None and refusal.request_id is not None
    failed = run("explain", spend_cap.request_id, "--records", str(traffic.path), env=WIDE)
    assert failed.exit_code == 0, failed.output
    assert f"call {spend_cap.call_id}" in failed.stdout and "error spend_cap" in failed.stdout
    assert "─ spend_cap ─" in failed.stdout
    refused = run("explain", refusal.request_id, "--records", str(traffic.path), env=WIDE)
    assert refused.exit_code == 0 and "stop_reason refusal" in refused.stdout and "Surface it" in refused.stdout
    missing = run("explain", "req_nothing", "--records", str(traffic.path))
    assert missing.exit_code == 1 and "no record" in missing.stdout
    no_file = run("explain", "req_nothing", "--records", str(traffic.path.with_name("none.jsonl")))
    assert no_file.exit_code == 2 and "cannot read the records file" in no_file.stderr
