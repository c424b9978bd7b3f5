"""`keel batch …`: run, status, cancel, list, results, adopt."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Annotated, TypeVar

import anthropic
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table

from .. import _jobcli as jobcli
from .._client import Client
from .._exceptions import (
    AmbiguousSubmission,
    BudgetExceeded,
    CallFailed,
    ForeignResults,
    StoreUnavailable,
)
from .backends import existing_ledger, open_ledger
from .costs import cost_line, cost_report
from .inputs import Defaults
from .jobs import Job
from .leases import LiveRunner, RunnerId
from .ledger import Shard, SQLLedger
from .runner import BatchRunner, Progress, RunnerOptions, job_id_for, preflight, spent_usd

batch_app = typer.Typer(help="Durable, resumable Message Batches.", no_args_is_help=True)
console = Console()
L = TypeVar("L")
LedgerOption = Annotated[
    Path | None,
    typer.Option(
        help="A SQLite ledger file (default: KEEL_DATABASE_URL's PostgreSQL if set, else batches.sqlite3 under "
        "$KEEL_HOME or ./.keel; `keel config` shows which)."
    ),
]


def _ledger(path: Path | None) -> closing[SQLLedger]:
    """The command's ledger, closed when the command ends (`with _ledger(path) as store:`)."""
    return closing(jobcli.reached(console, "batch", open_ledger, path))


def _progress_table(progress: Progress) -> Table:
    counts = progress.counts
    elapsed = time.monotonic() - progress.started
    eta = progress.eta_seconds()
    title = f"job {progress.job_id} — {elapsed:,.0f} s elapsed" + (f", ETA {eta:,.0f} s" if eta is not None else "")
    names = ("processing", "succeeded", "errored", "canceled", "expired")
    table = Table("shard", "batch", "status", Column("runner", no_wrap=True), *names, title=title)
    for shard in progress.shards:
        counts_now = (str(shard.counts.get(n, "-")) for n in names)
        table.add_row(str(shard.shard_id), shard.batch_id or "-", shard.state, _holder(shard), *counts_now)
    table.add_row("all", "", "", "", *(str(counts.get(n, 0)) for n in names))
    return table


def _preflight(input: Path, options: RunnerOptions, path: Path | None) -> None:
    """Print what the requests not finished yet could cost (reading the ledger only if there is one)."""
    store = jobcli.reached(console, "batch", existing_ledger, path)  # a dry run creates no ledger
    estimate = preflight(input, options, store)
    spent = spent_usd(store, job_id_for(input, options)) if store is not None else 0.0
    if store is not None:
        store.close()
    jobcli.show_preflight(console, "batch run", estimate, options.budget_usd, spent)


def _summary(ledger: SQLLedger, job_id: str) -> None:
    counts = ledger.state_counts(job_id)
    console.print("  " + ", ".join(f"{state}: {count:,}" for state, count in sorted(counts.items())), soft_wrap=True)
    for row in cost_report(ledger, job_id):
        console.print(f"  {cost_line(row)}", soft_wrap=True, highlight=False)


@batch_app.command("run")
def run(
    input: jobcli.InputArgument,
    out: jobcli.OutOption,
    model: jobcli.ModelOption = None,
    max_tokens: jobcli.MaxTokensOption = None,
    system: jobcli.SystemOption = None,
    rejects: jobcli.RejectsOption = None,
    failures: Annotated[Path | None, typer.Option(help="What did not succeed (default: OUT.failures.jsonl).")] = None,
    max_attempts: Annotated[int, typer.Option(help="Submissions per request before a retryable failure is final.")] = 3,
    shard_requests: Annotated[int, typer.Option(help="Requests per batch at most.")] = 100_000,
    shard_bytes: Annotated[int, typer.Option(help="Bytes per batch at most.")] = 256 * 1024 * 1024,
    poll_min: Annotated[float, typer.Option(help="Shortest wait between polls, seconds.")] = 1.0,
    poll_max: Annotated[float, typer.Option(help="Longest wait between polls, seconds.")] = 60.0,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of a live display.")] = False,
    budget_usd: jobcli.BudgetOption = None,
    dry_run: jobcli.DryRunOption = False,
    ledger: LedgerOption = None,
    lease_seconds: jobcli.LeaseOption = 60.0,
) -> None:
    """Run a batch job, or resume it, or help another runner with it: the same input and defaults are the same job.
    Exit status 3: stopped at the budget."""
    if not input.is_file():
        raise typer.BadParameter(f"no such file: {input}", param_hint="INPUT")
    options = RunnerOptions(
        defaults=Defaults(model=model, max_tokens=max_tokens, system=system),
        max_attempts=max_attempts,
        shard_requests=shard_requests,
        shard_bytes=shard_bytes,
        poll_min=poll_min,
        poll_max=poll_max,
        budget_usd=budget_usd,
        lease_seconds=lease_seconds,
    )
    sdk = jobcli.start_job("batch run", anthropic.Anthropic, dry_run, lambda: _preflight(input, options, ledger))
    if sdk is None:
        return
    rejects = rejects or out.with_name(out.stem + ".rejects.jsonl")
    failures = failures or out.with_name(out.stem + ".failures.jsonl")
    with (
        _ledger(ledger) as store,
        Client(sdk, policy="background") as client,
        Live(console=console, auto_refresh=False) as live,
        jobcli.notes_shown(console, "keel.batch", "batch run"),
    ):

        def show(progress: Progress) -> None:
            if quiet:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(progress.counts.items()))
                console.print(f"{progress.job_id}: {counts}", highlight=False, soft_wrap=True)
            else:
                live.update(_progress_table(progress), refresh=True)

        runner = BatchRunner(client, store, options, on_progress=show)
        try:
            job_id = runner.run(input, out, rejects, failures)
        except (AmbiguousSubmission, ForeignResults, CallFailed, StoreUnavailable) as err:
            console.print(f"[red]keel batch: {err}[/red]")
            raise typer.Exit(1) from None
        except BudgetExceeded as stopped:
            live.stop()
            _summary(store, job_id_for(input, options))
            jobcli.stop_at_budget(console, "batch run", stopped)
        live.stop()
        console.print(f"job {job_id}: results in {out}, rejects in {rejects}, failures in {failures}", soft_wrap=True)
        _summary(store, job_id)


def _holder(shard: Shard) -> str:
    """Who holds a shard: a runner (host, pid), one whose lease expired (to be taken over), or nobody."""
    if shard.lease_owner is None or shard.lease_left is None:
        return "-"
    runner = RunnerId.parse(shard.lease_owner)
    held = f"{runner.host} pid {runner.pid}"
    return held if shard.lease_left > 0 else f"{held} (lease expired)"


def _shown_status(job: Job, live: list[LiveRunner]) -> str:
    """A job's status as the ledger says, except that a "running" job no live runner holds is "stopped"."""
    if job.status == "running" and not live:
        return "stopped"
    return job.status


def _runners_line(live: list[LiveRunner]) -> str:
    return ", ".join(f"{r.runner.host} pid {r.runner.pid}" for r in live) or "-"


@batch_app.command("status")
def status(job: Annotated[str, typer.Argument(help="The job id.")], ledger: LedgerOption = None) -> None:
    """A job's shards (and the runner that holds each), item states and cost so far, and its live runners."""
    with _ledger(ledger) as store:
        found = store.job(job)
        if found is None:
            console.print(f"[red]no job {job} in {store.where}[/red]")
            raise typer.Exit(2)
        live = store.runners(job)
        shown = _shown_status(found, live)
        if shown != found.status:
            shown += " (no runner: the leases of its last runners expired; keel batch run resumes it)"
        console.print(f"job {job}: {shown}, input {found.input_path}", highlight=False, soft_wrap=True)
        shards = store.shards(job)
        for each in live:
            held = [str(shard.shard_id) for shard in shards if shard.held_by(each.runner.key)]
            doing = f"holds shards {', '.join(held)}" if held else "holds no shard (waiting, or between steps)"
            console.print(
                f"  {each.runner}: {doing}; lease {each.lease_left:,.0f} s left", highlight=False, soft_wrap=True
            )
        console.print(_progress_table(Progress(job, shards, time.monotonic())))
        _summary(store, job)


@batch_app.command("list")
def list_jobs(ledger: LedgerOption = None) -> None:
    """The jobs in the ledger, each with its live runners (host, pid)."""
    with _ledger(ledger) as store:
        table = Table(*(Column(name, no_wrap=True) for name in ("job", "status", "runners")), "input", "items")
        for job in store.jobs():
            counts = store.state_counts(job.job_id)
            live = store.runners(job.job_id)
            table.add_row(
                job.job_id, _shown_status(job, live), _runners_line(live), job.input_path, f"{sum(counts.values()):,}"
            )
        console.print(table)


@batch_app.command("cancel")
def cancel(job: Annotated[str, typer.Argument(help="The job id.")], ledger: LedgerOption = None) -> None:
    """Cancel a job's batches in flight; `keel batch run` then collects what finished and stops."""
    with _ledger(ledger) as store:
        if store.job(job) is None:
            console.print(f"[red]no job {job} in {store.where}[/red]")
            raise typer.Exit(2)
        store.set_job_status(job, "canceling")
        with Client(policy="background") as client:
            for shard in store.shards(job, ("submitted",)):
                assert shard.batch_id is not None
                BatchRunner(client, store).cancel_batch(shard.batch_id)
                console.print(f"canceling {shard.batch_id} (shard {shard.shard_id})")
        store.set_job_status(job, "canceled")


@batch_app.command("results")
def results(
    job: Annotated[str, typer.Argument(help="The job id.")],
    out: Annotated[Path, typer.Option(help="Where to write the results file.")],
    ledger: LedgerOption = None,
) -> None:
    """Write a job's results file again from the ledger (one line per input line, in input order)."""
    with _ledger(ledger) as store:
        if store.job(job) is None:
            console.print(f"[red]no job {job} in {store.where}[/red]")
            raise typer.Exit(2)
        with Client(policy="background") as client:
            BatchRunner(client, store).write_outputs(job, out, None, None)
    console.print(f"job {job}: results in {out}")


@batch_app.command("adopt")
def adopt(
    job: Annotated[str, typer.Argument(help="The job id.")],
    shard: Annotated[int, typer.Option(help="The shard whose create response was lost.")],
    batch_id: Annotated[str, typer.Option(help="The batch that holds it.")],
    ledger: LedgerOption = None,
) -> None:
    """Settle an ambiguous submission: this shard is that batch (its custom_ids are checked on download)."""
    with _ledger(ledger) as store:
        if not any(s.shard_id == shard and s.state == "submitting" for s in store.shards(job)):
            console.print(f"[red]job {job} has no shard {shard} waiting to be settled[/red]")
            raise typer.Exit(2)
        store.mark_submitted(shard, batch_id)
    console.print(f"shard {shard} of job {job} is batch {batch_id}; run keel batch run again to carry on")
