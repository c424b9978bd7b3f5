"""`keel run`: a file of requests through real-time calls, resumable, within a budget, with a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import anthropic
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import _jobcli as jobcli
from .._budget import format_usd
from .._client import AsyncClient
from .._exceptions import BudgetExceeded
from .._pricing import load_prices
from ..batch.inputs import Defaults
from .ledger import RUN_LEDGERS, SQLRunLedger
from .runner import BulkOptions, BulkProgress, BulkRunner, preflight, run_id_for

console = Console()
_QUIET_EVERY = 1.0  # seconds between log lines with --quiet


def run(
    ctx: typer.Context,
    input: jobcli.InputArgument,
    out: jobcli.OutOption,
    model: jobcli.ModelOption = None,
    max_tokens: jobcli.MaxTokensOption = None,
    system: jobcli.SystemOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 8,
    rejects: jobcli.RejectsOption = None,
    budget_usd: jobcli.BudgetOption = None,
    dry_run: jobcli.DryRunOption = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of a progress bar.")] = False,
    ledger: Annotated[
        Path | None,
        typer.Option(
            help="A SQLite ledger file (default: KEEL_DATABASE_URL's PostgreSQL if set, else runs.sqlite3 under "
            "$KEEL_HOME or ./.keel; `keel config` shows which)."
        ),
    ] = None,
    lease_seconds: jobcli.LeaseOption = 60.0,
) -> None:
    """Send a file of requests as real-time calls (for work that cannot wait for a batch), or resume the job: the
    same input and defaults are the same job. Exit status 3: stopped at the budget."""
    if not input.is_file():
        raise typer.BadParameter(f"no such file: {input}", param_hint="INPUT")
    options = BulkOptions(Defaults(model, max_tokens, system), concurrency, budget_usd, lease_seconds=lease_seconds)
    sdk = jobcli.start_job("run", anthropic.AsyncAnthropic, dry_run, lambda: _preflight(ctx, input, options, ledger))
    if sdk is None:
        return
    rejects = rejects or out.with_name(out.stem + ".rejects.jsonl")
    store = jobcli.reached(ctx, console, "run", RUN_LEDGERS.open, ledger)
    named = {"model": model, "max_tokens": max_tokens, "system": system, "budget_usd": budget_usd, "ledger": ledger}
    kept = f"Every answer received is kept in the ledger ({store.where}); the rest is sent on resume."
    try:
        with (
            jobcli.resumable("run", kept, jobcli.resume_command("run", input, out, named)),
            _display(quiet) as show,
            jobcli.notes_shown(console, "keel.bulk", "run"),
            jobcli.retries_shown(console, "run"),
        ):
            job_id = asyncio.run(_run(sdk, store, options, input, out, rejects, show))
    except BudgetExceeded as stopped:
        _summary(store, run_id_for(input, options))
        jobcli.stop_at_budget(console, "run", stopped)
    console.print(f"job {job_id}: results in {out}, rejects in {rejects}", soft_wrap=True, highlight=False)
    _summary(store, job_id)


async def _run(
    sdk: anthropic.AsyncAnthropic,
    store: SQLRunLedger,
    options: BulkOptions,
    input: Path,
    out: Path,
    rejects: Path,
    show: Callable[[BulkProgress], None],
) -> str:
    async with AsyncClient(sdk, policy="background") as client:
        return await BulkRunner(client, store, options, on_progress=show).run(input, out, rejects)


def _preflight(ctx: typer.Context, input: Path, options: BulkOptions, path: Path | None) -> None:
    """Print what the requests left to send could cost (reading the ledger only if there is one)."""
    store = jobcli.reached(ctx, console, "run", RUN_LEDGERS.existing, path)  # a dry run creates no ledger
    estimate = preflight(input, options, store, load_prices())
    spent = store.totals(run_id_for(input, options)).cost_usd if store is not None else 0.0
    jobcli.show_preflight(console, "run", estimate, options.budget_usd, spent)


@contextmanager
def _display(quiet: bool) -> Iterator[Callable[[BulkProgress], None]]:
    """A Rich progress bar (rate, ETA, tokens, cost), or with `quiet` a log line a second and one at the end."""
    if quiet:
        last = 0.0

        def log(progress: BulkProgress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= _QUIET_EVERY or progress.done == progress.requests:
                last = now
                done = f"{progress.done:,}/{progress.requests:,} done"
                console.print(f"{progress.job_id}: {done}, {_stats(progress)}", highlight=False, soft_wrap=True)

        yield log
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn("{task.fields[stats]}"), console=console) as bar:
        task = bar.add_task("keel run", total=None, stats="")

        def update(progress: BulkProgress) -> None:
            bar.update(task, completed=progress.done, total=progress.requests, stats=_stats(progress))

        yield update


def _stats(progress: BulkProgress) -> str:
    eta = progress.eta_seconds()
    return (
        f"{progress.errored:,} errored, {progress.rate:,.1f}/s, ETA {'-' if eta is None else f'{eta:,.0f} s'}, "
        f"{progress.input_tokens:,} in / {progress.output_tokens:,} out tokens, {format_usd(progress.cost_usd)}"
    )


def _summary(store: SQLRunLedger, job_id: str) -> None:
    counts = store.state_counts(job_id)
    totals = store.totals(job_id)
    console.print("  " + ", ".join(f"{state}: {count:,}" for state, count in sorted(counts.items())), soft_wrap=True)
    console.print(
        f"  {totals.usage.prompt_tokens:,} input / {totals.usage.output_tokens:,} output tokens, "
        f"{format_usd(totals.cost_usd)} at standard prices",
        soft_wrap=True,
        highlight=False,
    )
