"""`keel tour`: the lesson's try-it-yourself, offline against the embedded emulator by default.

Each step says what it expects and checks it; the tour exits non-zero when any step misbehaves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic._middleware import CallNext
from anthropic._request import APIRequest
from anthropic._response import APIResponse
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from keel.emulator import FAULT_HEADER, Emulator, EmulatorConfig, client

TOUR_MODEL = "claude-haiku-5-5"
PROMPT = "In two sentences, why do production systems log a request id for every call? [[keel:words=40]]"


@dataclass
class Attempt:
    retry_count: int
    status: int | None
    request_id: str | None
    seconds: float


class AttemptRecorder:
    """SDK middleware: it runs once per HTTP attempt inside the SDK's retry loop, so it sees every retry."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def __call__(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        started = time.perf_counter()
        try:
            response = call_next(request)
        except anthropic.APIConnectionError:
            self.attempts.append(Attempt(request.retries_taken, None, None, time.perf_counter() - started))
            raise
        self.attempts.append(
            Attempt(
                request.retries_taken,
                response.status_code,
                response.headers.get("request-id"),
                time.perf_counter() - started,
            )
        )
        return response


class Tour:
    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.live = live
        self.recorder = AttemptRecorder()
        self.failures: list[str] = []
        if live:
            self.sdk = anthropic.Anthropic(middleware=[self.recorder])
            self.bad_key_sdk = anthropic.Anthropic(api_key="not-a-real-key", max_retries=0)
        else:
            emulator = Emulator(EmulatorConfig(tps=120))
            self.sdk = client(emulator, middleware=[self.recorder])
            self.bad_key_sdk = client(emulator, api_key="not-a-real-key", max_retries=0)

    def check(self, ok: bool, what: str) -> None:
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.console.print(f"  {mark} {what}")
        if not ok:
            self.failures.append(what)

    def step(self, title: str, run: Callable[[], None]) -> None:
        self.console.rule(f"[bold]{title}")
        try:
            run()
        except Exception as err:  # a step that blows up is a failed step, reported, not a traceback
            self.check(False, f"{title}: unexpected {type(err).__name__}: {err}")

    def streaming(self) -> None:
        with self.sdk.messages.stream(
            model=TOUR_MODEL, max_tokens=200, messages=[{"role": "user", "content": PROMPT}]
        ) as stream:
            for text in stream.text_stream:
                self.console.print(text, end="", soft_wrap=True, highlight=False)
            final = stream.get_final_message()
            request_id = stream.request_id
        self.console.print()
        usage = final.usage
        self.console.print(
            f"  request_id [cyan]{request_id}[/cyan]  stop_reason [cyan]{final.stop_reason}[/cyan]  "
            f"usage: input {usage.input_tokens}, output {usage.output_tokens}"
        )
        self.check(final.stop_reason == "end_turn" and bool(request_id), "streamed to end_turn with a request_id")

    def show_error(self, err: anthropic.APIStatusError) -> None:
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_row("status", str(err.status_code))
        table.add_row("type", str(err.type))
        table.add_row("message", str(err.api_message))
        table.add_row("request_id", str(err.request_id))
        table.add_row("SDK class", type(err).__name__)
        self.console.print(table)

    def bad_key(self) -> None:
        try:
            self.bad_key_sdk.messages.create(
                model=TOUR_MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
        except anthropic.AuthenticationError as err:
            self.show_error(err)
            self.check(
                err.status_code == 401 and bool(err.request_id), "401 authentication_error: fix the key, never retry"
            )
            return
        self.check(False, "a bad API key should give 401")

    def invalid_request(self) -> None:
        try:
            self.sdk.messages.create(model=TOUR_MODEL, max_tokens=-5, messages=[{"role": "user", "content": "hi"}])
        except anthropic.BadRequestError as err:
            self.show_error(err)
            self.check(
                err.type == "invalid_request_error" and "max_tokens" in str(err.api_message),
                "400 invalid_request_error naming the field: fix the request, never retry unchanged",
            )
            return
        self.check(False, "max_tokens=-5 should give 400")

    def overloaded(self) -> None:
        self.recorder.attempts.clear()
        fault = {FAULT_HEADER: "status=529; times=2; retry_after_ms=200"}
        message = self.sdk.messages.create(
            model=TOUR_MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Say hello. [[keel:words=8]]"}],
            extra_headers={} if self.live else fault,
        )
        table = Table("attempt", "retry-count header", "status", "request_id", "seconds")
        for number, attempt in enumerate(self.recorder.attempts, 1):
            table.add_row(
                str(number),
                str(attempt.retry_count),
                str(attempt.status),
                str(attempt.request_id),
                f"{attempt.seconds:.3f}",
            )
        self.console.print(table)
        answer = "".join(block.text for block in message.content if block.type == "text")
        self.console.print(f"  final answer: {answer!r}")
        statuses = [attempt.status for attempt in self.recorder.attempts]
        expected = [200] if self.live else [529, 529, 200]
        self.check(statuses == expected, f"the SDK retried by itself: statuses {statuses} (expected {expected})")

    def run(self) -> int:
        where = "the real Claude API (ANTHROPIC_API_KEY)" if self.live else "keel's embedded emulator (offline)"
        self.console.print(Panel(f"keel tour — running against {where}", style="bold"))
        self.step("1. A streaming call: text as it arrives, then request_id, stop_reason, usage", self.streaming)
        self.step("2a. A deliberate error: a bad API key", self.bad_key)
        self.step("2b. A deliberate error: an invalid request", self.invalid_request)
        title = "3. Overloaded (529) twice, retried by the SDK, then success"
        self.step(title if not self.live else "3. A call with its attempts visible", self.overloaded)
        self.console.rule()
        if self.failures:
            self.console.print(f"[red]{len(self.failures)} step(s) misbehaved.[/red]")
            return 1
        self.console.print("[green]Every step behaved as expected.[/green]")
        return 0


def run_tour(*, live: bool = False, console: Console | None = None) -> int:
    console = console or Console()
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        console.print("[red]--live needs ANTHROPIC_API_KEY in the environment.[/red]")
        return 2
    return Tour(console, live).run()
