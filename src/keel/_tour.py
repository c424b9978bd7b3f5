"""`keel tour`: the lesson's try-it-yourself, offline against the embedded emulator by default.

Every step runs through `keel.Client` and shows keel's classification and its attempt and call records.
Each step checks what it expects; the tour exits non-zero when any step misbehaves.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from keel._client import Client
from keel._exceptions import CallFailed
from keel._modes import choose_mode
from keel._records import CapturedRecords
from keel._stop import MaxTokens, Refusal, StopSequence
from keel.batch import BatchRunner, Progress, RunnerOptions, SQLiteLedger, cost_line, cost_report
from keel.batch.inputs import Defaults
from keel.emulator import FAULT_HEADER, Emulator, EmulatorConfig, client

TOUR_MODEL = "claude-haiku-5-5"
PROMPT = "In two sentences, why do production systems log a request id for every call? [[keel:words=40]]"


class Tour:
    def __init__(self, console: Console, live: bool, records: Path) -> None:
        self.console = console
        self.live = live
        self.records_path = records
        self.records = CapturedRecords(records)
        self.failures: list[str] = []
        if live:
            sdk, bad_key_sdk = anthropic.Anthropic(), anthropic.Anthropic(api_key="not-a-real-key")
        else:
            emulator = Emulator(EmulatorConfig(tps=120, batch_speed=300))  # a one-minute batch takes 0.2 s
            sdk, bad_key_sdk = client(emulator), client(emulator, api_key="not-a-real-key")
        self.keel = Client(sdk, records=self.records)
        self.batch_client = Client(sdk, policy="background")
        self.bad_key = Client(bad_key_sdk, records=self.records)

    # --- display ---------------------------------------------------------------------------------

    def check(self, ok: bool, what: str) -> None:
        self.console.print(f"  {'[green]✓[/green]' if ok else '[red]✗[/red]'} {what}")
        if not ok:
            self.failures.append(what)

    def step(self, title: str, run: Callable[[], None]) -> None:
        self.console.rule(f"[bold]{title}")
        self.records.clear()
        try:
            run()
        except Exception as err:  # a step that blows up is a failed step, reported, not a traceback
            self.check(False, f"{title}: unexpected {type(err).__name__}: {err}")

    def show_records(self) -> None:
        attempts = self.records.attempts
        table = Table("attempt", "retry#", "status", "request_id", "keel class", "ms", title="attempt records")
        for a in attempts:
            status = str(a.status) if a.status is not None else "-"
            table.add_row(
                str(a.attempt),
                str(a.retry_count),
                status,
                str(a.request_id),
                a.error_class or "",
                f"{a.latency_ms:.1f}",
            )
        self.console.print(table)
        for call in self.records.calls:
            cost = f"${call.cost_usd:.6f}" if call.cost_usd is not None else "unknown price"
            ttft = f", ttft {call.ttft_ms:.0f} ms" if call.ttft_ms is not None else ""
            self.console.print(
                f"  call record: {call.mode}/{call.policy} {call.model} → "
                f"{call.stop_reason or call.error_class}, request_id {call.request_id}, "
                f"tokens in {call.usage.input_tokens} / out {call.usage.output_tokens}, {cost}, "
                f"{call.latency_ms:.0f} ms{ttft}, {call.attempts} attempt(s)"
            )

    def show_failure(self, err: CallFailed) -> None:
        sdk_error = err.sdk_error
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_row("status", str(err.status))
        table.add_row("type", str(getattr(sdk_error, "type", None)))
        table.add_row("message", str(getattr(sdk_error, "api_message", sdk_error)))
        table.add_row("request_id", str(err.request_id))
        table.add_row(
            "keel says", f"{'retryable' if err.error_class.retryable else 'not retryable'}: {err.error_class.action}"
        )
        table.add_row("why", err.error_class.note)
        self.console.print(table)

    # --- steps -----------------------------------------------------------------------------------

    def streaming(self) -> None:
        with self.keel.messages.stream(
            model=TOUR_MODEL, max_tokens=200, messages=[{"role": "user", "content": PROMPT}]
        ) as stream:
            for text in stream.text_stream:
                self.console.print(text, end="", soft_wrap=True, highlight=False)
        self.console.print()
        self.show_records()
        reply = stream.reply
        self.check(
            reply is not None and reply.outcome.kind == "end_turn" and bool(reply.request_id),
            "streamed to end_turn; the call record has its request_id, usage and cost",
        )

    def expect_failure(self, run: Callable[[], Any], name: str, what: str) -> None:
        try:
            run()
        except CallFailed as err:
            self.show_failure(err)
            self.show_records()
            self.check(err.error_class.name == name and bool(err.request_id) and err.record.attempts == 1, what)
            return
        self.check(False, f"expected {name}")

    def bad_key_call(self) -> None:
        self.expect_failure(
            lambda: self.bad_key.messages.create(
                model=TOUR_MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ),
            "authentication",
            "401 authentication_error: not retryable, fix the key",
        )

    def invalid_request(self) -> None:
        self.expect_failure(
            lambda: self.keel.messages.create(
                model=TOUR_MODEL, max_tokens=-5, messages=[{"role": "user", "content": "hi"}]
            ),
            "invalid_request",
            "400 invalid_request_error naming the field: not retryable, fix the request",
        )

    def overloaded(self) -> None:
        fault = {FAULT_HEADER: "status=529; times=2; retry_after_ms=200"}
        reply = self.keel.messages.create(
            model=TOUR_MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Say hello. [[keel:words=8]]"}],
            extra_headers={} if self.live else fault,
        )
        self.show_records()
        self.console.print(f"  final answer: {reply.text!r}")
        statuses = [r.status for r in self.records.attempts]
        expected = [200] if self.live else [529, 529, 200]
        self.check(statuses == expected, f"the SDK retried the overloaded (retryable) responses: {statuses}")

    def stop_reasons(self) -> None:
        ask = [{"role": "user", "content": "Count from one to twenty in words. [[keel:words=30]]"}]
        cut = self.keel.messages.create(model=TOUR_MODEL, max_tokens=12, messages=ask)
        self.console.print(f"  max_tokens=12 → {type(cut.outcome).__name__}: {cut.text!r}")
        whole = self.keel.messages.create(model=TOUR_MODEL, max_tokens=12, messages=ask, continue_max_tokens=4)
        self.console.print(
            f"  with continue_max_tokens=4 → {whole.outcome.kind} after {whole.record.rounds} rounds, stitched"
        )
        counting = [{"role": "user", "content": "Count: one, two, three. [[keel:reply=one, two, three, four]]"}]
        seq = self.keel.messages.create(model=TOUR_MODEL, max_tokens=50, messages=counting, stop_sequences=["three"])
        self.console.print(
            f"  stop_sequences=['three'] → {type(seq.outcome).__name__}: stopped at {seq.message.stop_sequence!r}"
        )
        ok = isinstance(cut.outcome, MaxTokens) and isinstance(seq.outcome, StopSequence)
        if not self.live:
            refused = self.keel.messages.create(
                model=TOUR_MODEL, max_tokens=50, messages=[{"role": "user", "content": "[[keel:refuse=cyber]]"}]
            )
            outcome = refused.outcome
            if isinstance(outcome, Refusal):
                self.console.print(
                    f"  refusal → category {outcome.category!r}: {outcome.explanation} (never blind-retried)"
                )
            ok = (
                ok and isinstance(outcome, Refusal) and outcome.category == "cyber" and whole.outcome.kind == "end_turn"
            )
        self.check(ok, "max_tokens (and its continuation), stop_sequence and refusal each became their outcome")

    def modes(self) -> None:
        cases = [
            ("a chat UI, someone watching", choose_mode(watching=True, max_tokens=2_000)),
            ("10,000 nightly summaries", choose_mode(waiting=False, requests=10_000, max_tokens=500)),
            ("a quick classification in a request handler", choose_mode(waiting=True, max_tokens=10)),
        ]
        table = Table("work", "mode", "keel's reason")
        for work, choice in cases:
            table.add_row(work, choice.mode, choice.reason)
        self.console.print(table)
        self.check(
            [c.mode for _, c in cases] == ["stream", "batch", "standard"], "stream, batch, standard — with reasons"
        )

    def batch(self) -> None:
        with tempfile.TemporaryDirectory(prefix="keel-tour-") as tmp:
            folder = Path(tmp)
            questions = ["What is a request id?", "Why stream?", "When to batch?", "What is a 529?", "Why jitter?"]
            src = folder / "prompts.jsonl"
            src.write_text(
                "".join(json.dumps({"custom_id": f"q{n}", "prompt": q}) + "\n" for n, q in enumerate(questions))
            )
            options = RunnerOptions(defaults=Defaults(model=TOUR_MODEL, max_tokens=200), poll_min=0.05, poll_max=0.2)
            seen: list[str] = []

            def progress(p: Progress) -> None:
                line = ", ".join(f"{k} {v}" for k, v in sorted(p.counts.items()) if v)
                if not seen or seen[-1] != line:
                    seen.append(line)
                    self.console.print(f"  polled: {line}", highlight=False)

            ledger = SQLiteLedger(folder / "ledger.sqlite3")
            runner = BatchRunner(self.batch_client, ledger, options, on_progress=progress)
            job = runner.run(src, folder / "results.jsonl")
            results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
            table = Table("custom_id", "status", "answer")
            for row in results:
                text = "".join(b.get("text", "") for b in row.get("message", {}).get("content", []))
                table.add_row(row["custom_id"], row["status"], text[:60] + ("…" if len(text) > 60 else ""))
            self.console.print(table)
            costs = cost_report(ledger, job)
            for c in costs:
                self.console.print(f"  {cost_line(c)}", highlight=False)
            ledger.close()
        halved = all(c.batch_usd is not None and abs(2 * c.batch_usd - (c.standard_usd or 0)) < 1e-12 for c in costs)
        self.check(
            [r["status"] for r in results] == ["succeeded"] * 5 and halved,
            "5 requests, one result each, in input order; the batch cost half the standard price",
        )

    def run(self) -> int:
        where = "the real Claude API (ANTHROPIC_API_KEY)" if self.live else "keel's embedded emulator (offline)"
        self.console.print(Panel(f"keel tour — keel.Client running against {where}", style="bold"))
        self.step("1. A streaming call: text as it arrives, then its records", self.streaming)
        self.step("2a. A deliberate error: a bad API key", self.bad_key_call)
        self.step("2b. A deliberate error: an invalid request", self.invalid_request)
        title = "3. Overloaded (529) twice, retried by the SDK, then success"
        self.step(title if not self.live else "3. A call with its attempts visible", self.overloaded)
        self.step("4. stop_reason outcomes", self.stop_reasons)
        self.step("5. Choosing a delivery mode", self.modes)
        if not self.live:  # a real batch can take up to an hour: the tour shows it offline only
            self.step("6. A Message Batch: submitted, polled, collected, costed", self.batch)
        self.console.rule()
        self.records.close()
        if self.failures:
            self.console.print(f"[red]{len(self.failures)} step(s) misbehaved.[/red]")
        else:
            self.console.print("[green]Every step behaved as expected.[/green]")
        records = shlex.quote(str(self.records_path))
        page = shlex.quote(str(self.records_path.with_name("report.html")))
        self.console.print(
            f"The tour's calls are recorded in {self.records_path}. Summarise them as tables, or as a page with "
            f"charts to open in a browser:\n  keel report {records}\n  keel report {records} --html {page}",
            highlight=False,
            soft_wrap=True,
        )
        return 1 if self.failures else 0


def run_tour(records: Path, *, live: bool = False, console: Console | None = None) -> int:
    """The tour; its calls' records are appended to `records` (the folder made if need be)."""
    console = console or Console()
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        console.print("[red]--live needs ANTHROPIC_API_KEY in the environment.[/red]")
        return 2
    records.parent.mkdir(parents=True, exist_ok=True)
    return Tour(console, live, records).run()
