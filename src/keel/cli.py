"""The `keel` command."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from keel._callcli import call as call_command
from keel._callcli import stream as stream_command

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from keel._error_map import ErrorClass
    from keel._stop import StopRow


@dataclass(frozen=True)
class _Lazy:
    """A command loaded on first use: where it is (a module's `typer.Typer` or command function) and the help
    `keel --help` lists for it (a test checks it is the command's own)."""

    module: str
    attribute: str
    help: str


_LAZY = {
    "run": _Lazy(
        "keel.bulk.cli",
        "run",
        "Send a file of requests as real-time calls (for work that cannot wait for a batch), or resume the job: the\n"
        "same input and defaults are the same job. Exit status 3: stopped at the budget.",
    ),
    "proxy": _Lazy(
        "keel.proxy.cli",
        "proxy",
        "Forward every request to the API untouched, with faults and recording: any client, any language.",
    ),
    "emulator": _Lazy("keel._emulatorcli", "emulator_app", "The local emulator of the Claude API."),
    "batch": _Lazy("keel.batch.cli", "batch_app", "Durable, resumable Message Batches."),
}
"""The commands whose modules import the SDK, the emulator or its web stack: `keel --help` and `keel --version` load
none of them."""


def load_command(name: str) -> TyperGroup | TyperCommand:
    """The click command of a lazy command, imported now."""
    lazy = _LAZY[name]
    target = getattr(import_module(lazy.module), lazy.attribute)
    command: TyperGroup | TyperCommand
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # a group, even of one command (emulator serve)
    else:
        single = typer.Typer()
        single.command(name)(target)
        loaded = typer.main.get_command(single)
        assert isinstance(loaded, TyperCommand)
        command = loaded
    command.name = name
    return command


class _Unloaded(TyperCommand):
    """A lazy command's stand-in until it is loaded: its name and help, for the listing and for typo suggestions."""


class _LazyGroup(TyperGroup):
    """keel's top-level group: a lazy command is imported when it is run or asked for its help; the listing of
    `keel --help` shows its help without importing it."""

    _listing = False  # while `format_help` runs: the listing wants names and help only

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, lazy in _LAZY.items():
            self.commands[name] = _Unloaded(name, help=lazy.help)

    # `Any` for click's types: typer vendors click as a private module of its own
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, _Unloaded) and not self._listing:
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


# --debug tracebacks without the frames' variables: they hold the command's arguments (`--api-key`) and sys.argv
app = typer.Typer(
    cls=_LazyGroup,
    help="keel: production habits for the Claude Messages API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("call")(call_command)
app.command("stream")(stream_command)


DEFAULT_RECORDS = Path(".keel") / "records.jsonl"
"""Where `keel tour` writes its records, and where `keel explain REQUEST_ID` looks first."""


@dataclass
class _Global:
    debug: bool = False


_GLOBAL = _Global()


def _show_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        typer.echo(f"keel {version('claude-keel')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error instead of one line.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print keel's version and exit.")
    ] = False,
) -> None:
    _GLOBAL.debug = debug


@app.command()
def tour(
    live: Annotated[bool, typer.Option(help="Run against the real API with ANTHROPIC_API_KEY.")] = False,
    records: Annotated[Path, typer.Option(help="Append the tour's call records to this file.")] = DEFAULT_RECORDS,
) -> None:
    """Walk through streaming, errors and retries against the embedded emulator (or the real API)."""
    from keel._tour import run_tour

    raise typer.Exit(run_tour(records, live=live))


@app.command("config")
def show_config() -> None:
    """Where keel keeps its state: each backend, where it lives (passwords hidden) and which setting chose it."""
    from rich.console import Console
    from rich.table import Table

    from keel._exceptions import ConfigError
    from keel.config import load_settings, placements

    console = Console()
    try:
        settings = load_settings()
    except ConfigError as err:
        console.print(f"[red]keel config: {err}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    file = f"settings file: {settings.file}" if settings.file else "no keel.toml (./keel.toml or $KEEL_HOME/keel.toml)"
    table = Table("state", "backend", "where", "chosen by", title=f"keel state — {file}")
    for row in placements(settings):
        table.add_row(row.state, row.backend, row.where, row.chosen_by)
    console.print(table, soft_wrap=True)


@app.command()
def explain(
    what: Annotated[
        str | None,
        typer.Argument(
            metavar="TERM",
            help="An error row name (overloaded), a status (429), an error.type or error_code, STATUS:TYPE:CODE, a "
            "stop_reason (refusal, max_tokens, pause_turn, ...) or a request id (req_...).",
        ),
    ] = None,
    records: Annotated[Path, typer.Option(help="The records file a request id is looked up in.")] = DEFAULT_RECORDS,
) -> None:
    """Explain an error, a stop_reason or a recorded request: what it means, whether to retry, what to do. Without
    TERM: keel's whole error map."""
    from rich.console import Console

    from keel._error_map import ERROR_TABLE
    from keel._stop import STOP_TABLE, stop_row

    console = Console()
    if what is None:
        if console.width >= _WIDE_TABLE:
            console.print(_error_table(ERROR_TABLE))
        else:
            _error_list(ERROR_TABLE, console)
        return
    if what.startswith("req_"):
        _explain_request(what.strip(), records, console)
        return
    stop = stop_row(what.strip().lower())
    if stop is not None:
        _explain_stop(stop, console)
        return
    found = _error_rows(what)
    if found is None:
        typer.echo(
            f"keel explain: {what!r} is not a term keel knows. Give an error name, a status (e.g. 429), an error.type "
            "or error_code, STATUS:TYPE:CODE, a stop_reason, or a request id (req_...).\n"
            f"Error names: {', '.join(row.name for row in ERROR_TABLE)}\n"
            f"Stop reasons: {', '.join(row.kind for row in STOP_TABLE)}",
            err=True,
        )
        raise typer.Exit(2)
    rows, notes = found
    for note in notes:
        console.print(note)
    for row in rows:
        _explain_row(row, console)


def _explain_request(request_id: str, records: Path, console: Console) -> None:
    """The calls of a request id in the records, and what their error or stop means."""
    from keel._error_map import by_name
    from keel._report import find_calls
    from keel._stop import stop_row

    try:
        traces = find_calls(records, request_id)
    except OSError as err:
        typer.echo(f"keel explain: cannot read the records file {records}: {err.strerror or err}", err=True)
        typer.echo("Give the file keel.Client(records=PATH) writes with --records PATH.", err=True)
        raise typer.Exit(2) from None
    if not traces:
        typer.echo(f"keel explain: no record in {records} has request_id {request_id} (--records PATH for another)")
        raise typer.Exit(1)
    for trace in traces:
        call = trace.call or {}
        tried = ", ".join(str(a.get("status") or a.get("error_class")) for a in trace.attempts)
        console.print(
            f"call {trace.call_id}: {call.get('mode', '?')} {call.get('model', '?')}, "
            f"{len(trace.attempts)} attempt(s) [{tried}], "
            f"stop_reason {call.get('stop_reason')}, error {call.get('error_class')}",
            highlight=False,
            soft_wrap=True,
        )
        if call.get("error_class"):
            _explain_row(by_name(call["error_class"]), console)
        elif (stop := stop_row(str(call.get("outcome")))) is not None:
            _explain_stop(stop, console)


def _explain_stop(row: StopRow, console: Console) -> None:
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("means", row.meaning)
    table.add_row("retry it", row.retry)
    table.add_row("what to do", row.todo)
    table.add_row("keel outcome", row.outcome.__name__)
    console.print(Panel(table, title=f"stop_reason {row.kind}", title_align="left", expand=False))


def _error_rows(what: str) -> tuple[list[ErrorClass], list[str]] | None:
    """The rows `keel explain WHAT` shows, and notes on how WHAT was matched; None when nothing matches."""
    from keel._error_map import ERROR_TABLE, by_name, classify

    text = what.strip()
    if text.isdigit():
        status = int(text)
        if not 100 <= status <= 599:
            return None
        row = classify(status)
        others = [other for other in ERROR_TABLE if other.status == status and other is not row]
        notes = []
        if row.status != status:
            notes.append(f"{status} is not in the API's error table; keel treats it as {row.name}.")
        if others:
            notes.append(
                f"A bare {status} is {row.name}; with an error_code or message it can also be: "
                + ", ".join(other.name for other in others)
                + "."
            )
        return [row, *others], notes
    if ":" in text:
        return _error_triple(text)
    try:
        return [by_name(text.lower().replace("-", "_"))], []
    except KeyError:
        pass
    if any(row.error_code == text for row in ERROR_TABLE):
        return [classify(None, None, text)], [f"{text} is an error_code (error.details.error_code)."]
    if any(row.error_type == text for row in ERROR_TABLE):
        return [classify(None, text)], [f"{text} is an error.type; without a status (the status decides) it reads as:"]
    return None


def _error_triple(text: str) -> tuple[list[ErrorClass], list[str]] | None:
    from keel._error_map import ERROR_TABLE, classify

    parts = text.split(":")
    if len(parts) > 3:
        return None
    status_text, error_type, error_code = (*parts, "", "")[:3]
    if status_text and not (status_text.isdigit() and 100 <= int(status_text) <= 599):
        return None
    status = int(status_text) if status_text else None
    row = classify(status, error_type or None, error_code or None)
    notes = []
    if error_code and row.error_code != error_code:
        known = any(other.error_code == error_code for other in ERROR_TABLE)
        why = f"belongs to status {_code_status(error_code)}" if known else "is not one keel knows"
        notes.append(f"error_code {error_code} {why}: it is ignored, as the SDK docs advise.")
    if error_type and row.error_type is not None and row.error_type != error_type:
        notes.append(f"The API sends {row.status} with {row.error_type}, not {error_type}: the status decides.")
    return [row], notes


def _code_status(error_code: str) -> str:
    from keel._error_map import ERROR_TABLE

    return ", ".join(str(row.status) for row in ERROR_TABLE if row.error_code == error_code)


_WIDE_TABLE = 150  # narrower consoles get the map as a list: eight columns do not fit


def _error_list(rows: tuple[ErrorClass, ...], console: Console) -> None:
    from rich.markup import escape

    from keel._error_text import matches, yes_no

    console.print("[bold]keel's error map[/bold] (keel explain NAME for one row; a wider terminal shows a table)")
    for row in rows:
        console.print(f"\n[bold]{row.name}[/bold]  {escape(matches(row))}")
        retries = f"retryable: {yes_no(row.retryable)}   action: {row.action.value}"
        console.print(f"  {retries}   SDK retries: {yes_no(row.sdk_retries)}")
        console.print(f"  {escape(row.note)}")


def _error_table(rows: tuple[ErrorClass, ...]) -> Table:
    from rich.table import Table

    from keel._error_text import yes_no

    table = Table(title="keel's error map (keel explain NAME for one row)", title_justify="left")
    for column in ("name", "status", "error.type", "error_code", "retryable", "action", "SDK retries?"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", min_width=24, ratio=1)
    for row in rows:
        note = row.note if not row.message_contains else f"{row.note} (message contains {row.message_contains!r})"
        table.add_row(
            row.name,
            "—" if row.status is None else str(row.status),
            row.error_type or "—",
            row.error_code or "—",
            yes_no(row.retryable),
            row.action.value,
            yes_no(row.sdk_retries),
            note,
            style=None if row.retryable else "dim",
        )
    return table


def _explain_row(row: ErrorClass, console: Console) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from keel._error_text import matches, yes_no

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("matches", matches(row))
    table.add_row("keel retries it", yes_no(row.retryable))
    table.add_row("the SDK retries it", yes_no(row.sdk_retries))
    table.add_row("action", row.action.value)
    table.add_row("note", row.note)
    if row.retryable != row.sdk_retries:
        differs = (
            "keel does NOT retry it, though the SDK on its own would."
            if row.sdk_retries
            else "keel retries it; the SDK on its own does not."
        )
        table.add_row("differs", differs)
    console.print(Panel(table, title=row.name, title_align="left", expand=False))


@app.command()
def cards(
    count: Annotated[int, typer.Option(min=1, help="Cards in the quiz.")] = 10,
    seed: Annotated[int | None, typer.Option(help="Draw the same cards, in the same order, every time.")] = None,
    list_cards: Annotated[bool, typer.Option("--list", help="Print every card with its answer; no quiz.")] = False,
) -> None:
    """Flashcards from keel's own tables (error map, stop reasons, delivery modes): a quiz with a score, or --list."""
    from keel._cards import deck, listing, quiz

    every = deck()
    if list_cards:
        for line in listing(every):
            typer.echo(line)
        return
    score = quiz(every, count, seed, sys.stdin, typer.echo)
    typer.echo(score.line())


@app.command()
def report(
    records: Annotated[
        Path, typer.Argument(metavar="RECORDS", help="A JSONL records file (keel.Client(records=PATH)).")
    ],
    since: Annotated[
        str | None, typer.Option(help="Only records at or after this ISO 8601 time (no offset: UTC).")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Show the call that has this request_id (on the call or any attempt).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write the summary as a self-contained HTML page with charts, not as tables."
        ),
    ] = None,
) -> None:
    """Summarise a records file: calls, failures, retries, latency, tokens and cost; or find one call."""
    from rich.console import Console

    from keel._report import BadLine, find_calls, parse_since, render_calls, render_summary, summarize

    try:
        cutoff = parse_since(since) if since is not None else None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--since") from None
    if html is not None and request_id is not None:
        raise typer.BadParameter("the page summarises the whole file: leave out --request-id", param_hint="--html")
    shown = 0

    def bad_line(line: BadLine) -> None:
        nonlocal shown
        shown += 1
        if shown <= _BAD_LINES_SHOWN:
            typer.echo(f"keel: skipped {line}", err=True)
        elif shown == _BAD_LINES_SHOWN + 1:
            typer.echo(f"keel: more bad lines; only the first {_BAD_LINES_SHOWN} are listed", err=True)

    console = Console()
    try:
        if request_id is not None:
            traces = find_calls(records, request_id, since=cutoff, on_bad=bad_line)
            if json_output:
                typer.echo(json.dumps({"request_id": request_id, "calls": [t.as_dict() for t in traces]}, indent=2))
            else:
                render_calls(traces, request_id, console)
            if not traces:
                typer.echo(f"keel: no record in {records} has request_id {request_id}", err=True)
                raise typer.Exit(1)
            return
        summary = summarize(records, since=cutoff, on_bad=bad_line)
    except OSError as err:
        typer.echo(f"keel: cannot read {records}: {err.strerror or err}", err=True)
        raise typer.Exit(2) from None
    if shown:
        typer.echo(f"keel: {shown} bad line(s) skipped in {records}", err=True)
    if json_output:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
    elif html is None:
        render_summary(summary, console)
    if html is not None:
        from keel._report_html import render_html

        try:
            html.write_text(render_html(summary), encoding="utf-8")
        except OSError as err:
            typer.echo(f"keel: cannot write {html}: {err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"keel: wrote {html} ({summary.calls:,} calls); open it in a browser", err=True)


_BAD_LINES_SHOWN = 100


def failure_line(err: Exception) -> str:
    """What went wrong, in one line, for an error no command reported itself."""
    import anthropic

    from keel._error_map import classify_exception
    from keel._exceptions import KeelError

    if isinstance(err, anthropic.APIConnectionError):
        return f"cannot reach the API ({err}): check ANTHROPIC_BASE_URL and the network"
    if isinstance(err, anthropic.APIError):
        row = classify_exception(err)
        return f"the API answered {row.label()}: {err.message} — {row.note}"
    if isinstance(err, KeelError):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
    return f"unexpected {type(err).__name__}: {err}"


def main() -> None:
    """The `keel` command: an error no command reported is one line (the traceback with --debug)."""
    try:
        app()
    except Exception as err:  # typer re-raises what a command raised
        if _GLOBAL.debug:
            raise
        typer.echo(f"keel: {failure_line(err)}\nRun it again with --debug for the traceback.", err=True)
        sys.exit(1)
