"""`keel batch …`: run, status, cancel, list, results, adopt."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import anthropic
import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from .. import _jobcli as jobcli
from .._client import Client
from .._exceptions import AmbiguousSubmission, BudgetExceeded, CallFailed, ForeignResults, StoreUnavailable
from .backends import existing_ledger, open_ledger
from .costs import cost_line, cost_report
from .inputs import Defaults, count_rejects
from .jobs import Job
from .leases import LiveRunner, RunnerId
from .ledger import Shard, SQLLedger
from .runner import BatchRunner, Progress, RunnerOptions, job_id_for, preflight, spent_usd

batch_app = typer.Typer(help="Durable, resumable Message Batches.", no_args_is_help=True)
console = Console()
LedgerOption = Annotated[
    Path | None,
    typer.Option(
        help="A SQLite ledger file (default: KEEL_DATABASE_URL's PostgreSQL if set, else batches.sqlite3 under "
        "$KEEL_HOME or ./.keel; `keel config` shows which)."
    ),
]


def _ledger(ctx: typer.Context, path: Path | None) -> SQLLedger:
    return jobcli.reached(ctx, console, "batch", open_ledger, path)


_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def _running(job: Job, live: list[LiveRunner]) -> bool:
    """Whether a run drives the job: its status field says "running" (a run stopped by Ctrl-C, a failure or its
    budget sets it "stopped") and a runner's lease on it has not expired (a killed runner cannot say it stopped)."""
    return job.status == "running" and bool(live)


def _shown_status(job: Job, live: list[LiveRunner]) -> str:
    """A job's status as the ledger says, except that a "running" job no live runner holds is "stopped"."""
    if job.status == "running" and not _running(job, live):
        return "stopped"
    return job.status


def _holder(shard: Shard) -> str:
    """Who holds a shard: a runner (host, pid), one whose lease expired (to be taken over), or nobody."""
    if shard.lease_owner is None or shard.lease_left is None:
        return "-"
    runner = RunnerId.parse(shard.lease_owner)
    held = f"{runner.host} pid {runner.pid}"
    return held if shard.lease_left > 0 else f"{held} (lease expired)"


def _runners_line(live: list[LiveRunner]) -> str:
    return ", ".join(f"{r.runner.host} pid {r.runner.pid}" for r in live) or "-"


def _progress_view(progress: Progress, *, live: bool) -> Group:
    """A job's shards, numbered 1..n within the job, with the runner holding each and each round's counts (a retry
    round's requests are counted in that round, never added to the first's), then each shard's batch id whole on its
    own line (`adopt` takes it); elapsed time and ETA only while a run drives the job."""
    title = f"job {progress.job_id}"
    if live:
        eta = progress.eta_seconds()
        elapsed = f"{time.monotonic() - progress.started:,.0f} s elapsed"
        title += f" — {elapsed}" + (f", ETA {eta:,.0f} s" if eta is not None else "")
    holders = [_holder(shard) for shard in progress.shards]
    held = any(holder != "-" for holder in holders)  # the runner column only while a runner holds a shard
    runner_column = [Column("runner", no_wrap=True)] if held else []
    table = Table(
        "shard",
        "round",
        "state",
        *runner_column,
        *_COUNTS,
        title=title,
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for number, (shard, holder) in enumerate(zip(progress.shards, holders, strict=True), 1):
        counts_now = (str(shard.counts.get(n, "-")) for n in _COUNTS)
        table.add_row(str(number), str(shard.round), shard.state, *([holder] if held else []), *counts_now)
    for round_number, counts in _round_counts(progress).items():
        blank = [""] if held else []
        table.add_row("total", str(round_number), "", *blank, *(str(counts.get(n, 0)) for n in _COUNTS), style="bold")
    batches = [
        Text(f"shard {number}: {shard.batch_id}", no_wrap=True, overflow="ignore")
        for number, shard in enumerate(progress.shards, 1)
        if shard.batch_id
    ]
    return Group(table, *batches)


def _round_counts(progress: Progress) -> dict[int, dict[str, int]]:
    """Each round's request counts, its shards' summed (a retry round's requests are not added to the first's)."""
    rounds: dict[int, dict[str, int]] = {}
    for shard in sorted(progress.shards, key=lambda shard: shard.round):
        total = rounds.setdefault(shard.round, {})
        for name, value in shard.counts.items():
            total[name] = total.get(name, 0) + value
    return rounds


def _preflight(ctx: typer.Context, input: Path, options: RunnerOptions, path: Path | None) -> None:
    """Print what the requests not finished yet could cost (reading the ledger only if there is one)."""
    store = jobcli.reached(ctx, console, "batch", existing_ledger, path)  # a dry run creates no ledger
    estimate = preflight(input, options, store)
    spent = spent_usd(store, job_id_for(input, options)) if store is not None else 0.0
    jobcli.show_preflight(console, "batch run", estimate, options.budget_usd, spent)
    job = store.job(job_id_for(input, options)) if store is not None else None
    if store is not None and job is not None and job.status != "new":
        rejected = store.state_counts(job.job_id).get("rejected", 0)
    else:
        rejected = count_rejects(input, options.defaults, options.shard_bytes)
    if rejected:
        console.print(f"rejects: {rejected:,} input line(s) are not sent (the rejects file says why)", highlight=False)


def _summary(ledger: SQLLedger, job_id: str) -> None:
    counts = ledger.state_counts(job_id)
    final = ", ".join(f"{state}: {count:,}" for state, count in sorted(counts.items()))
    console.print(f"  final: {final}", soft_wrap=True)
    for row in cost_report(ledger, job_id):
        console.print(f"  {cost_line(row)}", soft_wrap=True, highlight=False)


@batch_app.command("run")
def run(
    ctx: typer.Context,
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
    sdk = jobcli.start_job("batch run", anthropic.Anthropic, dry_run, lambda: _preflight(ctx, input, options, ledger))
    if sdk is None:
        return
    rejects = rejects or out.with_name(out.stem + ".rejects.jsonl")
    failures = failures or out.with_name(out.stem + ".failures.jsonl")
    store = _ledger(ctx, ledger)
    named = {"model": model, "max_tokens": max_tokens, "system": system, "budget_usd": budget_usd, "ledger": ledger}
    kept = f"What finished is kept in the ledger ({store.where}); batches in flight go on and are collected on resume."
    with (
        jobcli.resumable("batch run", kept, jobcli.resume_command("batch run", input, out, named)),
        Client(sdk, policy="background") as client,
        Live(console=console, auto_refresh=False) as live,
        jobcli.notes_shown(console, "keel.batch", "batch run"),
        jobcli.retries_shown(console, "batch run"),
    ):

        def show(progress: Progress) -> None:
            if quiet:
                rounds = "; ".join(
                    f"round {n}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                    for n, counts in _round_counts(progress).items()
                )
                console.print(f"{progress.job_id}: {rounds}", highlight=False, soft_wrap=True)
            else:
                live.update(_progress_view(progress, live=True), refresh=True)

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
    console.print(f"job {job_id}: results in {out}, rejects in {rejects}, failures in {failures}", soft_wrap=True)
    _summary(store, job_id)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@batch_app.command("status")
def status(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    ledger: LedgerOption = None,
    json_output: JsonOption = False,
) -> None:
    """A job's live runners, its shards (the runner that holds each, each round's counts), its items' final states and
    cost so far."""
    store = _ledger(ctx, ledger)
    found = store.job(job)
    if found is None:
        console.print(f"[red]no job {job} in {store.where}[/red]")
        raise typer.Exit(2)
    shards = store.shards(job)
    live = store.runners(job)
    numbers = {shard.shard_id: n for n, shard in enumerate(shards, 1)}

    def held(each: LiveRunner) -> list[int]:
        return [numbers[shard.shard_id] for shard in shards if shard.held_by(each.runner.key)]

    if json_output:
        typer.echo(
            json.dumps(
                {
                    "job_id": job,
                    "status": _shown_status(found, live),
                    "running": _running(found, live),
                    "input": found.input_path,
                    "runners": [
                        {
                            "host": each.runner.host,
                            "pid": each.runner.pid,
                            "lease_left": each.lease_left,
                            "shards": held(each),
                        }
                        for each in live
                    ],
                    "shards": [
                        {
                            "shard": n,
                            "round": s.round,
                            "batch_id": s.batch_id,
                            "state": s.state,
                            "counts": s.counts,
                            "runner": None if _holder(s) == "-" else _holder(s),
                        }
                        for n, s in enumerate(shards, 1)
                    ],
                    "final": store.state_counts(job),
                    "cost": [asdict(row) for row in cost_report(store, job)],
                },
                indent=2,
            )
        )
        return
    shown = _shown_status(found, live)
    if shown != found.status:
        shown += " (no runner: the leases of its last runners expired; keel batch run resumes it)"
    console.print(f"job {job}: {shown}, input {found.input_path}", highlight=False, soft_wrap=True)
    for each in live:
        numbered = held(each)
        doing = (
            f"holds shards {', '.join(map(str, numbered))}"
            if numbered
            else "holds no shard (waiting, or between steps)"
        )
        console.print(f"  {each.runner}: {doing}; lease {each.lease_left:,.0f} s left", highlight=False, soft_wrap=True)
    console.print(_progress_view(Progress(job, shards, time.monotonic()), live=False))
    _summary(store, job)


@batch_app.command("list")
def list_jobs(ctx: typer.Context, ledger: LedgerOption = None, json_output: JsonOption = False) -> None:
    """The jobs in the ledger, whether a run drives each, and its live runners (host, pid)."""
    store = _ledger(ctx, ledger)
    rows = [(job, sum(store.state_counts(job.job_id).values()), store.runners(job.job_id)) for job in store.jobs()]
    if json_output:
        listed = [
            {
                "job_id": j.job_id,
                "status": _shown_status(j, live),
                "running": _running(j, live),
                "runners": [{"host": each.runner.host, "pid": each.runner.pid} for each in live],
                "input": j.input_path,
                "items": n,
            }
            for j, n, live in rows
        ]
        typer.echo(json.dumps(listed, indent=2))
        return
    table = Table()
    table.add_column(
        "job", no_wrap=True, overflow="ignore", min_width=max((len(j.job_id) for j, _, _ in rows), default=3)
    )
    table.add_column("status", no_wrap=True)
    runners_width = max((len(_runners_line(live)) for _, _, live in rows), default=7)
    table.add_column("runners", no_wrap=True, overflow="ignore", min_width=runners_width)
    table.add_column("input", overflow="fold")
    table.add_column("items", no_wrap=True)
    for job, items, live in rows:
        table.add_row(job.job_id, _shown_status(job, live), _runners_line(live), job.input_path, f"{items:,}")
    console.print(table)


@batch_app.command("cancel")
def cancel(
    ctx: typer.Context, job: Annotated[str, typer.Argument(help="The job id.")], ledger: LedgerOption = None
) -> None:
    """Cancel a job's batches in flight; `keel batch run` then collects what finished and stops."""
    store = _ledger(ctx, ledger)
    if store.job(job) is None:
        console.print(f"[red]no job {job} in {store.where}[/red]")
        raise typer.Exit(2)
    store.set_job_status(job, "canceling")
    with Client(policy="background") as client:
        for number, shard in enumerate(store.shards(job), 1):
            if shard.state == "submitted" and shard.batch_id is not None:
                BatchRunner(client, store).cancel_batch(shard.batch_id)
                console.print(f"canceling {shard.batch_id} (shard {number})")
    store.set_job_status(job, "canceled")


@batch_app.command("results")
def results(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    out: Annotated[Path, typer.Option(help="Where to write the results file.")],
    ledger: LedgerOption = None,
) -> None:
    """Write a job's results file again from the ledger (one line per input line, in input order)."""
    store = _ledger(ctx, ledger)
    if store.job(job) is None:
        console.print(f"[red]no job {job} in {store.where}[/red]")
        raise typer.Exit(2)
    with Client(policy="background") as client:
        BatchRunner(client, store).write_outputs(job, out, None, None)
    console.print(f"job {job}: results in {out}")


@batch_app.command("adopt")
def adopt(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    shard: Annotated[int, typer.Option(help="The shard whose create response was lost (its number in the job).")],
    batch_id: Annotated[str, typer.Option(help="The batch that holds it.")],
    ledger: LedgerOption = None,
) -> None:
    """Settle an ambiguous submission: this shard is that batch (its custom_ids are checked on download)."""
    store = _ledger(ctx, ledger)
    shards = store.shards(job)
    if not 1 <= shard <= len(shards) or shards[shard - 1].state != "submitting":
        console.print(f"[red]job {job} has no shard {shard} waiting to be settled[/red]")
        raise typer.Exit(2)
    store.mark_submitted(shards[shard - 1].shard_id, batch_id)
    console.print(f"shard {shard} of job {job} is batch {batch_id}; run keel batch run again to carry on")
