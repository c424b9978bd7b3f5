"""What `keel run` and `keel batch run` share: the credentials check, where ledgers live, the pre-flight estimate,
the runner's notes and the budget's stop."""

from __future__ import annotations

import logging
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

import anthropic
import typer
from rich.console import Console

from . import _retry_notices as retry_notices
from ._budget import CostEstimate, format_usd
from ._exceptions import BudgetExceeded, ConfigError, StoreUnavailable, UnpricedModel

SDK = TypeVar("SDK", anthropic.Anthropic, anthropic.AsyncAnthropic)


class _Ledger(Protocol):
    def close(self) -> None: ...


L = TypeVar("L", bound=_Ledger | None)

BUDGET_EXIT = 3
"""The exit status of a job stopped by its budget (2 is bad input, 1 a failure)."""

# The options both commands take, as they take them.
InputArgument = Annotated[Path, typer.Argument(help="JSONL requests: batch form or short form (prompt/messages).")]
OutOption = Annotated[Path, typer.Option(help="Results file: one line per input line, in input order.")]
ModelOption = Annotated[str | None, typer.Option(help="Default model for short-form lines.")]
MaxTokensOption = Annotated[int | None, typer.Option(help="Default max_tokens for short-form lines.")]
SystemOption = Annotated[str | None, typer.Option(help="Default system prompt for short-form lines.")]
RejectsOption = Annotated[Path | None, typer.Option(help="Where bad input lines go (default: OUT.rejects.jsonl).")]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        min=0, help="The most the job may spend, in USD (batch jobs: at batch prices), earlier runs included."
    ),
]
DryRunOption = Annotated[bool, typer.Option(help="Print the pre-flight estimate and stop: nothing is sent or written.")]
LeaseOption = Annotated[
    float,
    typer.Option(
        min=0.1,
        help="Seconds a runner's claim on its work lasts unless renewed (every third of it, while it runs): another "
        "runner on the job takes over the work of one killed once its lease has passed.",
    ),
]


def start_job(command: str, make_sdk: Callable[[], SDK], dry_run: bool, preflight: Callable[[], None]) -> SDK | None:
    """The start both commands share: a dry run prints the pre-flight estimate and ends (None); a real run checks the
    credentials first (`sdk_with_credentials`), then prints the estimate, and gets the SDK client."""
    if dry_run:
        preflight()
        return None
    sdk = sdk_with_credentials(make_sdk, command)
    check_reachable(str(sdk.base_url), command)
    preflight()
    return sdk


PROBE_TIMEOUT = 3.0
"""Seconds the first contact may take: an API that cannot be reached at the start is reported within seconds (later
outages are ridden out by the background policy's retries)."""

INTERRUPTED_EXIT = 130
"""The exit status after Ctrl-C, as a shell gives it."""


def check_reachable(base_url: str, command: str) -> None:
    """A TCP connection to `base_url`'s host (nothing sent): none within seconds is two lines and exit 2, rather than
    a job that retries in silence."""
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT).close()
    except OSError as err:
        typer.echo(
            f"keel {command}: cannot reach the API at {base_url} ({err.strerror or err or 'timed out'}).\n"
            "Check ANTHROPIC_BASE_URL (unset for the real API) and the network; for the emulator, start "
            "`keel emulator serve`.",
            err=True,
        )
        raise typer.Exit(2) from None


def resume_command(command: str, input: Path, out: Path, options: Mapping[str, object]) -> str:
    """The command line that resumes a job: the same input and defaults (the job's identity), the same files."""
    words = ["keel", *command.split(), str(input), "--out", str(out)]
    for name, value in options.items():
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(words)


@contextmanager
def resumable(command: str, kept: str, resume: str) -> Iterator[None]:
    """Ctrl-C inside: two lines, what was kept and the command that resumes, and exit 130 (no traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"\nkeel {command}: interrupted. {kept}", err=True)
        typer.echo(f"To resume: {resume}", err=True)
        raise typer.Exit(INTERRUPTED_EXIT) from None


def sdk_with_credentials(make: Callable[[], SDK], command: str) -> SDK:
    """The SDK client `make` builds from the environment, checked for credentials the way the SDK looks for them
    (`ANTHROPIC_API_KEY`, `ANTHROPIC_AUTH_TOKEN`, a profile): without any, one line and exit 2, before anything is
    written, rather than a failure on the first request."""
    try:
        sdk = make()
    except anthropic.AnthropicError as err:  # a profile named, or a config folder, that cannot be read
        typer.echo(f"keel {command}: cannot load the API credentials: {err}", err=True)
        raise typer.Exit(2) from None
    if sdk.api_key is None and sdk.auth_token is None and sdk.credentials is None:
        typer.echo(
            f"keel {command}: no API credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN), and "
            "ANTHROPIC_BASE_URL for another endpoint such as `keel emulator serve`",
            err=True,
        )
        raise typer.Exit(2)
    return sdk


def reached(
    ctx: typer.Context, console: Console, command: str, opener: Callable[[Path | None], L], path: Path | None
) -> L:
    """`opener(path)`: the command's ledger, closed when the command ends (a PostgreSQL pool left to the garbage
    collector may be stopped from one of its own workers). One that cannot be reached (or configured), or of another
    kind or schema version (`ValueError`), is one line, naming it without its password, and exit 2: there is no
    fallback to a local file."""
    try:
        store = opener(path)
    except (StoreUnavailable, ConfigError, ValueError) as err:
        console.print(f"[red]keel {command}: {err}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if store is not None:
        ctx.call_on_close(store.close)
    return store


class _ConsoleNotes(logging.Handler):
    """Log records as lines on a Rich console (above a live display, if one is running)."""

    def __init__(self, console: Console, command: str) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.setFormatter(logging.Formatter(f"keel {command}: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), highlight=False, soft_wrap=True, markup=False)


@contextmanager
def notes_shown(console: Console, logger_name: str, command: str) -> Iterator[None]:
    """The runner's notes and warnings (another runner on the job, waiting for it, taking its work over, a request
    sent again after a kill), and the stores' (a shared ledger unreachable, then answering again), as lines of the
    command's output, while the block runs."""
    handler = _ConsoleNotes(console, command)
    with (
        retry_notices.handled_at_info(logger_name, handler),
        retry_notices.handled_at_info("keel.stores", handler),
    ):
        yield


RETRY_LINE_GAP = 1.0
"""Seconds between two "retrying" lines at least: the retries of calls in flight together make one line."""


class _RetryLines(logging.Handler):
    """The `keel.retrying` notices as lines: a "retrying" line per retry (those that come within `RETRY_LINE_GAP` of
    the last line are counted into the next one), and one "recovered" line when a call succeeds after them."""

    def __init__(self, console: Console, command: str) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.command = command
        self.shown_at: float | None = None  # when the last "retrying" line was shown; None: not retrying
        self.held = 0  # retries noticed since then, not shown yet

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "keel", {}).get("event")
        now = time.monotonic()
        if event == "retrying":
            if self.shown_at is not None and now - self.shown_at < RETRY_LINE_GAP:
                self.held += 1
                return
            more = f" (and {self.held} more retr{'y' if self.held == 1 else 'ies'})" if self.held else ""
            self._line(record.getMessage() + more)
            self.shown_at, self.held = now, 0
        elif event == "recovered" and self.shown_at is not None:
            self._line(record.getMessage())
            self.shown_at, self.held = None, 0

    def _line(self, text: str) -> None:
        self.console.print(f"keel {self.command}: {text}", highlight=False, soft_wrap=True, markup=False)


@contextmanager
def retries_shown(console: Console, command: str) -> Iterator[None]:
    """While the block runs, each retry of its calls (keel's rounds and the SDK's own retries) is a "retrying" line
    with the error, its request_id and the wait, and a call that succeeds after them a "recovered" line: a job
    riding out an outage says so instead of going quiet."""
    with (
        retry_notices.handled_at_info(retry_notices.logger.name, _RetryLines(console, command)),
        retry_notices.sdk_retries_noticed(),
    ):
        yield


def show_preflight(
    console: Console, command: str, estimate: CostEstimate, budget_usd: float | None, spent_usd: float
) -> None:
    """The pre-flight estimate, and the budget with what the job already spent; a budget over a model without a
    price cannot be kept: one line and exit 2, before anything is sent."""
    console.print(f"pre-flight: {estimate.describe()}", highlight=False, soft_wrap=True)
    if budget_usd is None:
        return
    left = budget_usd - spent_usd
    console.print(
        f"budget: {format_usd(budget_usd)}, {format_usd(spent_usd)} spent so far, {format_usd(left)} left",
        highlight=False,
        soft_wrap=True,
    )
    if estimate.unpriced_models:
        console.print(f"keel {command}: {UnpricedModel(estimate.unpriced_models[0])}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def stop_at_budget(console: Console, command: str, stopped: BudgetExceeded) -> NoReturn:
    console.print(
        f"keel {command}: stopped at the budget: {format_usd(stopped.spent_usd)} spent, {format_usd(stopped.left_usd)} "
        f"left of {format_usd(stopped.limit_usd)}; the next request could cost up to {format_usd(stopped.next_usd)}. "
        "Run the same command with a higher --budget-usd to carry on.",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(BUDGET_EXIT)
