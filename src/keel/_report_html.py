"""`keel report --html`: the summary as one self-contained page, with its charts as inline SVG.

The page loads nothing: its style and its one small script are inline, and its Content-Security-Policy forbids
every fetch. The script marks each chart with how many of its marks the browser drew (`data-drawn`), for a
reader's devtools and for the rendering test. Every piece of text from the records is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from ._report import ModelTotals, Percentiles, Summary, error_verdict, format_cost, format_ms, iso, ranked
from ._svg import INK, MUTED, PALETTE, Marker, Series, distribution, horizontal_bars, stacked_columns

__all__ = ["render_html"]

_QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
_CLASSES_OPEN = 3  # the failed calls of the most frequent classes are listed open; the others fold

_SCRIPT = """
for (const svg of document.querySelectorAll("svg.chart")) {
  let drawn = 0;
  for (const mark of svg.querySelectorAll("g.marks > *")) {
    const box = mark.getBBox();
    if (box.width > 0 || box.height > 0) drawn += 1;
  }
  const box = svg.getBoundingClientRect();
  svg.dataset.drawn = String(drawn);
  svg.dataset.size = Math.round(box.width) + "x" + Math.round(box.height);
}
document.documentElement.dataset.charts = "checked";
"""

_STYLE = """
:root { --ink: #212529; --muted: #6c757d; --line: #dee2e6; --bg: #f8f9fa; --card: #fff; --bad: #c92a2a; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { margin: 0; font-size: 22px; letter-spacing: -0.01em; }
header p { margin: 4px 0 0; color: var(--muted); }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(128px, 1fr)); gap: 12px; margin: 20px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.card .value { font-size: 20px; white-space: nowrap; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .note { color: var(--muted); font-size: 12px; }
.card.bad .value { color: var(--bad); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
  margin: 16px 0; }
section h2 { margin: 0 0 4px; font-size: 16px; }
section > p.lead { margin: 0 0 12px; color: var(--muted); }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 20px; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
figcaption span { font-weight: 400; color: var(--muted); }
.empty { color: var(--muted); font-style: italic; padding: 24px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 6px 0 0; padding: 0; list-style: none;
  color: #495057; font-size: 12.5px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.legend i.line { height: 3px; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; margin-top: 8px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.message { color: #495057; overflow-wrap: anywhere; }
code.request-id, #failed-calls td:first-child { white-space: nowrap; }
details { margin-top: 10px; }
summary { cursor: pointer; font-weight: 600; }
.tag { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; color: #fff; }
"""


def _script_hash() -> str:
    digest = hashlib.sha256(_SCRIPT.encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


def _colors(names: Iterable[str]) -> dict[str, str]:
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


def render_html(summary: Summary) -> str:
    """The whole page, from the summary alone (so its size does not depend on the file's)."""
    errors = _error_responses(summary)
    colors = _colors(ranked(summary.failures + errors))
    body = [
        _header(summary),
        _cards(summary),
        _latency(summary),
        _timeline(summary, errors, colors),
        _outcomes(summary, colors),
        _spend(summary),
        _failures(summary, colors),
        _bad_lines(summary),
    ]
    policy = f"default-src 'none'; style-src 'unsafe-inline'; script-src '{_script_hash()}'"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>keel report · {escape(summary.path)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main><script>{_SCRIPT}</script></body></html>\n"
    )


def _error_responses(summary: Summary) -> Counter[str]:
    counts: Counter[str] = Counter()
    for moment in summary.timeline.bins.values():
        counts.update(moment.errors)
    return counts


def _header(summary: Summary) -> str:
    span = "no records"
    if summary.first_at is not None and summary.last_at is not None:
        span = f"{iso(summary.first_at)} to {iso(summary.last_at)} ({_duration(summary.last_at - summary.first_at)})"
    since = (
        f" · since {iso(summary.since)}, {summary.before_since:,} earlier record(s) left out"
        if summary.since is not None
        else ""
    )
    return (
        f"<header><h1>keel report</h1><p><code>{escape(summary.path)}</code> · {escape(span)}{escape(since)}</p>"
        "</header>"
    )


def _duration(seconds: float) -> str:
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _card(label: str, value: str, note: str = "", *, bad: bool = False, key: str = "") -> str:
    return (
        f'<div class="card{" bad" if bad else ""}" data-card="{escape(key or label)}"><div class="label">'
        f'{escape(label)}</div><div class="value">{escape(value)}</div><div class="note">{escape(note)}</div></div>'
    )


def _compact(count: int) -> str:
    """A count in at most about six characters: 987,654 or 5.77 B."""
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if count >= size:
            return f"{count / size:.3g} {suffix}"
    return f"{count:,}"


def _cards(summary: Summary) -> str:
    totals = summary.totals
    share = f"{summary.failed / summary.calls:.1%} of calls" if summary.calls else ""
    latency = summary.latency.get("all")
    p50 = latency.quantile(0.5) if latency else None
    cards = [
        _card("Calls", f"{summary.calls:,}", f"{summary.succeeded:,} succeeded", key="calls"),
        _card("Failed", f"{summary.failed:,}", share, bad=summary.failed > 0, key="failed"),
        _card("Retries", f"{summary.retries:,}", f"in {summary.retried_calls:,} call(s)", key="retries"),
        _card("Latency p50", "—" if p50 is None else f"{format_ms(p50)} ms", "successful calls", key="latency-p50"),
        _card("Input tokens", _compact(totals.usage.prompt_tokens), "cache reads and writes included", key="input"),
        _card("Output tokens", _compact(totals.usage.output_tokens), f"{totals.usage.output_tokens:,}", key="output"),
        _card("Cost", format_cost(totals), "at the records' prices", key="cost"),
    ]
    if summary.bad_lines:
        cards.append(_card("Bad lines", f"{summary.bad_lines:,}", "skipped: see below", bad=True, key="bad-lines"))
    return f'<div class="cards">{"".join(cards)}</div>'


def _section(key: str, title: str, lead: str, *content: str) -> str:
    return f'<section id="{key}"><h2>{escape(title)}</h2><p class="lead">{escape(lead)}</p>{"".join(content)}</section>'


def _figure(caption: str, note: str, chart: str) -> str:
    return f"<figure><figcaption>{escape(caption)} <span>{escape(note)}</span></figcaption>{chart}</figure>"


def _empty(what: str) -> str:
    return f'<p class="empty">{escape(what)}</p>'


def _distribution_figure(name: str, caption: str, stats: Percentiles | None, empty: str) -> str:
    if stats is None or not stats.count:
        return _figure(caption, "", _empty(empty))
    markers = [Marker(label, value) for q, label in _QUANTILES if (value := stats.quantile(q)) is not None]
    note = f"{stats.count:,} calls, log scale" + ("" if stats.exact else "; percentiles within 0.5%")
    return _figure(caption, note, distribution(name, stats.histogram(), markers, unit="ms"))


def _latency(summary: Summary) -> str:
    names = sorted(summary.latency, key=lambda name: (name != "all", name))  # "all" first, then the modes
    rows = [(f"latency: {name}", summary.latency[name]) for name in names]
    if summary.ttft.count:
        rows.append(("time to first token: stream", summary.ttft))
    table = _table(
        "latency-table",
        ["", "calls", *(label + " (ms)" for _, label in _QUANTILES)],
        [
            [escape(name), f"{stats.count:,}", *(_ms_cell(label, stats.quantile(q)) for q, label in _QUANTILES)]
            for name, stats in rows
        ],
        numeric_from=1,
    )
    charts = (
        _distribution_figure("latency", "Latency", summary.latency.get("all"), "No successful calls."),
        _distribution_figure("ttft", "Time to first token", summary.ttft, "No streamed calls."),
    )
    lead = (
        "Successful calls, from the call's start to its end; streams also to their first token. Dashed: p50, p95, p99."
    )
    return _section("latency", "Latency", lead, f'<div class="pair">{"".join(charts)}</div>', table if rows else "")


def _ms_cell(label: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f'<span data-q="{label}" data-ms="{value!r}">{format_ms(value)}</span>'


def _timeline(summary: Summary, errors: Counter[str], colors: dict[str, str]) -> str:
    series = summary.timeline.series()
    if not series:
        return _section("timeline", "Errors and retries over time", "", _empty("No calls."))
    labels = [_clock(start, summary.timeline.width_ms) for start, _ in series]
    layers = [Series(name, [moment.errors[name] for _, moment in series], colors[name]) for name in ranked(errors)]
    retries = Series("retries", [moment.retries for _, moment in series], INK)
    width = _duration(summary.timeline.width_ms / 1000)
    if errors or summary.retries:
        errors_chart = stacked_columns("errors", labels, layers, line=retries)
        errors_chart += _legend([(name, colors[name], False) for name in ranked(errors)] + [("retries", INK, True)])
    else:
        errors_chart = _empty("No error responses and no retries.")
    failed = Series("failed", [sum(moment.failed.values()) for _, moment in series], PALETTE[0])
    succeeded = Series("succeeded", [moment.calls - failed.values[i] for i, (_, moment) in enumerate(series)], MUTED)
    calls_chart = stacked_columns("calls", labels, [succeeded, failed], height=180)
    return _section(
        "timeline",
        "Errors and retries over time",
        f"Each column is {width}. Errors are the error responses by keel's error class, those retried included; "
        "the line counts the retries of the calls that ended in that column.",
        _figure("Error responses by class, and retries", "", errors_chart),
        _figure("Calls ended", "", calls_chart),
        _legend([("succeeded", MUTED, False), ("failed", PALETTE[0], False)]),
    )


def _clock(start: float, width_ms: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    if width_ms >= 86_400_000:
        return moment.strftime("%m-%d")
    if width_ms >= 60_000:
        return moment.strftime("%H:%M")
    return moment.strftime("%H:%M:%S") + (f".{moment.microsecond // 100_000}" if width_ms < 1_000 else "")


def _legend(items: Sequence[tuple[str, str, bool]]) -> str:
    entries = "".join(
        f'<li><i class="{"line" if line else ""}" style="background:{color}"></i>{escape(name)}</li>'
        for name, color, line in items
    )
    return f'<ul class="legend">{entries}</ul>'


def _outcomes(summary: Summary, colors: dict[str, str]) -> str:
    reasons = ranked(summary.stop_reasons)
    stops = (
        horizontal_bars("stop_reasons", [(name, count, f"{count:,}") for name, count in reasons.items()])
        if reasons
        else _empty("No messages.")
    )
    failures = ranked(summary.failures)
    rows = []
    for name, count in failures.items():
        retryable, action = error_verdict(name)
        tag = f'<span class="tag" style="background:{colors.get(name, MUTED)}">{escape(name)}</span>'
        rows.append([tag, f"{count:,}", retryable, escape(action)])
    table = (
        _table("failures-table", ["error class", "calls", "keel retries it", "what to do"], rows, numeric_from=1, to=2)
        if rows
        else _empty("No failed calls.")
    )
    return _section(
        "outcomes",
        "Outcomes",
        "How the successful calls stopped, and the classes of the calls that failed.",
        '<div class="pair">',
        _figure("stop_reason", "successful calls", stops),
        _figure("Failed calls by error class", "", table),
        "</div>",
    )


def _spend(summary: Summary) -> str:
    if not summary.model_modes:
        return _section("spend", "Tokens and cost by model and mode", "", _empty("No calls."))
    columns = ["model", "mode", "calls", "failed", "input", "output", "cache write", "cache read", "cost"]
    rows = [_spend_row(model, mode, summary.model_modes[model, mode]) for model, mode in sorted(summary.model_modes)]
    if len(rows) > 1:
        rows.append(_spend_row("total", "", summary.totals))
    table = _table("spend-table", columns, rows, numeric_from=2, total=len(rows) > 1)
    costs = sorted(
        ((f"{model} · {mode}", totals) for (model, mode), totals in summary.model_modes.items()),
        key=lambda item: -(item[1].cost_usd or 0),
    )
    bars = [(label, totals.cost_usd or 0.0, format_cost(totals)) for label, totals in costs]
    tokens = sorted(
        ((label, totals.usage.prompt_tokens + totals.usage.output_tokens) for label, totals in costs),
        key=lambda item: -item[1],
    )
    charts = (
        _figure("Cost", "by model and mode", horizontal_bars("cost", bars, color="#2b8a3e")),
        _figure("Tokens", "input and output", horizontal_bars("tokens", [(k, v, f"{v:,}") for k, v in tokens])),
    )
    lead = (
        "Input counts uncached input; cache writes (5 min and 1 h) and reads are apart. Unpriced models show no cost."
    )
    return _section(
        "spend", "Tokens and cost by model and mode", lead, f'<div class="pair">{"".join(charts)}</div>', table
    )


def _spend_row(model: str, mode: str, totals: ModelTotals) -> list[str]:
    usage = totals.usage
    counts = (usage.input_tokens, usage.output_tokens, usage.cache_write_tokens, usage.cache_read_tokens)
    return [
        escape(model),
        escape(mode),
        f"{totals.calls:,}",
        f"{totals.failed:,}",
        *(f"{count:,}" for count in counts),
        escape(format_cost(totals)),
    ]


def _failures(summary: Summary, colors: dict[str, str]) -> str:
    if not summary.failed:
        return _section("failed-calls", "Failed calls", "", _empty("No call failed."))
    blocks = []
    for rank, (name, count) in enumerate(ranked(summary.failures).items()):
        kept = list(reversed(summary.latest_failures[name]))
        shown = f"all {count:,}" if len(kept) == count else f"the latest {len(kept):,} of {count:,}"
        rows = [
            [
                escape(iso(failure.at) or ""),
                f'<code class="request-id">{escape(failure.request_id or "—")}</code>',
                f"<code>{escape(failure.call_id)}</code>",
                escape(f"{failure.model} · {failure.mode}"),
                f'<span class="message">{escape(failure.error)}</span>',
            ]
            for failure in kept
        ]
        table = _table(f"failed-{name}", ["ended", "request_id", "call_id", "model · mode", "message"], rows)
        tag = f'<span class="tag" style="background:{colors.get(name, MUTED)}">{escape(name)}</span>'
        opened = " open" if rank < _CLASSES_OPEN else ""
        summary_line = f"<summary>{tag} {escape(shown)}</summary>"
        blocks.append(f'<details{opened} data-class="{escape(name)}">{summary_line}{table}</details>')
    lead = "Newest first. Look one up with: keel report RECORDS --request-id REQUEST_ID, or keel explain REQUEST_ID."
    return _section("failed-calls", "Failed calls", lead, *blocks)


def _bad_lines(summary: Summary) -> str:
    if not summary.bad_lines:
        return ""
    kept = summary.first_bad_lines
    shown = f"all {summary.bad_lines:,}" if len(kept) == summary.bad_lines else f"the first {len(kept)}"
    rows = [[f"{bad.number:,}", escape(bad.reason)] for bad in kept]
    return _section(
        "bad-lines",
        f"{summary.bad_lines:,} bad line(s) skipped",
        f"Lines that are not keel records ({shown} listed); every good line around them is counted.",
        _table("bad-lines-table", ["line", "why"], rows, numeric_from=0, to=1),
    )


def _table(
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric_from: int | None = None,
    to: int | None = None,
    total: bool = False,
) -> str:
    """A table of already escaped cells; columns from `numeric_from` (up to `to`) are right-aligned numbers."""

    def numeric(index: int) -> bool:
        return numeric_from is not None and index >= numeric_from and (to is None or index < to)

    head = "".join(f'<th class="{"n" if numeric(i) else ""}">{escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for number, row in enumerate(rows):
        last = total and number == len(rows) - 1
        cells = "".join(f'<td class="{"n" if numeric(i) else ""}">{cell}</td>' for i, cell in enumerate(row))
        body.append(f'<tr class="{"total" if last else ""}">{cells}</tr>')
    return f'<table id="{escape(key)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
