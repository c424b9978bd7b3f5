"""Chaos: a job of tool-using conversations through keel while the emulator fails a third of the requests.

The fault mix (`MIX`) is drawn at random per request: 20 % 529, 10 % 429 with retry-after, 5 % 500, 3 % connection
reset, 3 % mid-stream error, 2 % dropped stream (the last two cut streams only). Every conversation asks for a tool,
runs it through keel's at-most-once store, and sends its result back; some conversations are replayed after the
tool ran (a worker that lost its progress), so the store has to answer instead of the tool.

Background mode (the emulator in-process, and over loopback with `keel proxy` in front): every conversation
completes, each result is written once, keel's records hold exactly the request_ids and statuses the server's
access log holds, and no tool ran twice. Interactive mode: every failure is reported within the deadline, classified,
with the request_id of the response that ended it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import pytest
from keel_helpers import ask, async_keel_client
from proxy_helpers import MODEL, proxied
from reliability_helpers import scale

from keel import AsyncClient, KeelError, RetryPolicy, read_records
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, Scenario
from keel.emulator.faults import Rule, parse_fault_header
from keel.stores import SQLiteStore
from keel.tools import AtMostOnce, at_most_once, tool_result

MIX: list[tuple[str, float]] = [
    ("status=529", 0.20),
    ("status=429; retry_after=1", 0.10),  # the API's whole-second retry-after
    ("status=500", 0.05),
    ("connection_reset=true", 0.03),
    ("stream_error_after=5", 0.03),  # after content has arrived: five events in
    ("drop_after=5", 0.02),
]
CALLS = scale(300, 2000)
CONCURRENCY = 48
REPLAYED_EVERY = 5  # every fifth conversation is replayed from the start once its tool has run
TOOL = {
    "name": "send_receipt",
    "description": "Email the receipt of an order (a side effect: must happen once)",
    "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
}
BACKGROUND = RetryPolicy("chaos-background", max_retries=4, timeout=10, budget=120, backoff_base=0.01, backoff_cap=0.05)
DEADLINE = 0.75  # shorter than the 429s' retry-after: a retry that could not finish in time is not attempted
SLACK = 1.0  # an attempt begun before the deadline may end after it, later on a busy machine
INTERACTIVE = RetryPolicy("chaos-interactive", max_retries=2, timeout=5, deadline=DEADLINE, backoff_cap=0.05)
# what keel calls the error each fault ends a call with
CLASS_OF_STATUS = {529: "overloaded", 429: "rate_limited", 500: "server_error", 502: "server_error"}

CONVERSATION: ContextVar[str] = ContextVar("conversation")


def chaos_scenario(seed: int) -> Scenario:
    """`MIX` as scenario rules: the first rule that fires applies, so each rule's probability is its share of what
    the rules before it left."""
    rules, left = [], 1.0
    for spec, share in MIX:
        rules.append(Rule(parse_fault_header(spec), path="/v1/messages", probability=share / left))
        left -= share
    return Scenario(rules=rules, seed=seed)


@dataclass
class Job:
    """One run of the job: the client, the tool and what happened."""

    keel: AsyncClient
    tool: AtMostOnce[dict[str, Any]]
    on_interrupt: str
    effects: list[str] = field(default_factory=list)  # a conversation's id each time the tool's side effect ran
    results: list[tuple[str, str]] = field(default_factory=list)  # (conversation, final text), as the job writes
    replies: list[str | None] = field(default_factory=list)  # the request_id of every successful call
    failures: list[tuple[KeelError, float]] = field(default_factory=list)  # with the seconds the call took


def receipt_tool(store: SQLiteStore, effects: list[str]) -> AtMostOnce[dict[str, Any]]:
    @at_most_once(store=store, name="send_receipt")
    def send_receipt(input: dict[str, Any]) -> dict[str, Any]:
        effects.append(CONVERSATION.get())  # the real side effect, counted
        return {"sent": True, "order": input["order"]}

    return send_receipt


async def call_model(job: Job, params: dict[str, Any], stream: bool) -> Any:
    """One call, as a stream or not; a failure is noted with how long it took to be reported, then raised."""
    started = time.monotonic()
    try:
        if stream:
            async with job.keel.messages.stream(on_interrupt=job.on_interrupt, **params) as s:
                message = await s.get_final_message()
                assert s.reply is not None
                job.replies.append(s.reply.request_id)
                return message
        reply = await job.keel.messages.create(**params)
        job.replies.append(reply.request_id)
        return reply.message
    except KeelError as err:
        job.failures.append((err, time.monotonic() - started))
        raise


async def conversation(job: Job, number: int) -> None:
    """Ask for the tool, run it at most once, send its result back, write the answer; a conversation that fails is
    left there (interactive mode reports it)."""
    name = f"order-{number}"
    CONVERSATION.set(name)
    stream = number % 2 == 1
    params = {"model": MODEL, "max_tokens": 24, "tools": [TOOL], "messages": ask(f"Order {number}: send_receipt")}
    try:
        for _ in range(2 if number % REPLAYED_EVERY == 0 else 1):  # a replay starts the conversation over
            first = await call_model(job, params, stream)
            block = next(b for b in first.content if b.type == "tool_use")
            result = await asyncio.to_thread(tool_result, block, [job.tool], conversation=name)
        turn = [{"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
        final = await call_model(job, {**params, "messages": [*params["messages"], *turn]}, stream)
    except KeelError:
        return
    job.results.append((name, "".join(b.text for b in final.content if b.type == "text")))


async def run_job(job: Job, conversations: int) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(number: int) -> None:
        async with gate:
            await conversation(job, number)

    await asyncio.gather(*(one(n) for n in range(conversations)))


def conversations_for(calls: int) -> int:
    """Conversations of about `calls` calls: two each, three for a replayed one."""
    return round(calls / (2 + 1 / REPLAYED_EVERY))


async def chaos(
    tmp_path: Path, client: Callable[..., AsyncClient], policy: RetryPolicy, on_interrupt: str
) -> tuple[Job, list[dict[str, Any]]]:
    """Run the job with this client and policy; the job and keel's records."""
    records = tmp_path / f"{policy.name}.jsonl"
    store = SQLiteStore(tmp_path / f"{policy.name}-tools.sqlite3")
    effects: list[str] = []
    job = Job(client(policy=policy, records=records), receipt_tool(store, effects), on_interrupt, effects)
    try:
        await run_job(job, conversations_for(CALLS))
    finally:
        await job.keel.close()
        store.close()
    return job, read_records(records)


def report(label: str, job: Job, served: Iterable[Any]) -> None:
    """One line of figures for docs/reliability.md (shown by `pytest -rP`)."""
    entries = [e for e in served if e.path == "/v1/messages"]
    statuses = Counter(e.status for e in entries)
    faults = Counter((e.fault or "none").split(";")[0] for e in entries)
    failures = Counter(err.error_class.name for err, _ in job.failures)
    print(
        f"{label}: {len(job.replies)} calls succeeded, {len(job.failures)} failed {dict(failures)}; "
        f"{len(entries)} requests served {dict(statuses)}; faults {dict(faults)}; "
        f"tool ran {len(job.effects)} times for {len(job.results)} results; "
        f"slowest failure reported in {max((took for _, took in job.failures), default=0):.2f} s"
    )


def served_pairs(entries: Iterable[Any]) -> Counter[tuple[str | None, int]]:
    """(request_id, status) of each answer a server gave to /v1/messages (a reset, status 0, answered nothing)."""
    return Counter((e.request_id, e.status) for e in entries if e.path == "/v1/messages" and e.status != 0)


def attempt_pairs(records: list[dict[str, Any]]) -> Counter[tuple[str | None, int]]:
    return Counter((r["request_id"], r["status"]) for r in records if r["kind"] == "attempt" and r["status"])


def assert_background_held(job: Job, records: list[dict[str, Any]], served: Counter[tuple[str | None, int]]) -> None:
    conversations = conversations_for(CALLS)
    names = [f"order-{n}" for n in range(conversations)]
    assert job.failures == []  # every call completed
    assert sorted(name for name, _ in job.results) == sorted(names)  # each result written once
    assert all(text for _, text in job.results)
    assert Counter(job.effects) == Counter(names)  # each tool ran once, replays included
    calls = [r for r in records if r["kind"] == "call"]
    assert len(calls) == len(job.replies) and len({r["call_id"] for r in calls}) == len(calls)  # one record a call
    assert sorted(r["request_id"] for r in calls) == sorted(job.replies)
    assert attempt_pairs(records) == served  # every answer, as the server's log has it, once
    faults = {status for _, status in served} - {200}
    assert faults == {529, 429, 500} or faults == {529, 429, 500, 502}  # the mix did hit (502: a reset, proxied)


@pytest.mark.usefixtures("quick_backoff")
async def test_background_job_completes_every_call_once_under_the_fault_mix(tmp_path: Path) -> None:
    emulator = Emulator(EmulatorConfig(scenario=chaos_scenario(seed=13)))
    job, records = await chaos(tmp_path, lambda **o: async_keel_client(emulator, **o), BACKGROUND, "continue")
    report("background, in-process", job, emulator.access_log.entries())
    assert_background_held(job, records, served_pairs(emulator.access_log.entries()))
    resets = sum(e.status == 0 for e in emulator.access_log.entries())
    assert resets > 0 and resets == sum(r["kind"] == "attempt" and r["status"] is None for r in records)


@pytest.mark.usefixtures("quick_backoff")
async def test_background_job_through_keel_proxy_completes_every_call_once(tmp_path: Path) -> None:
    with proxied(EmulatorConfig(scenario=chaos_scenario(seed=17))) as setup:

        def client(**options: Any) -> AsyncClient:
            sdk = anthropic.AsyncAnthropic(
                api_key=DEFAULT_API_KEY, base_url=setup.url, _strict_response_validation=True
            )
            return AsyncClient(sdk, **options)

        job, records = await chaos(tmp_path, client, BACKGROUND, "continue")
        upstream = setup.emulator.access_log.entries()
        relayed = setup.proxy.log.entries()
    report("background, through keel proxy (upstream's log)", job, upstream)
    assert_background_held(job, records, served_pairs(relayed))
    # the proxy relayed each of the upstream's answers as it was, and answered each reset with a 502 of its own
    assert served_pairs(upstream) == served_pairs(e for e in relayed if e.status != 502 or e.error is None)
    assert sum(e.status == 0 for e in upstream) == sum(e.status == 502 and e.error is not None for e in relayed) > 0


def assert_no_attempt_began_after_the_deadline(records: list[dict[str, Any]]) -> None:
    began = {r["call_id"]: r["at"] - r["latency_ms"] / 1000 for r in records if r["kind"] == "call"}
    for attempt in (r for r in records if r["kind"] == "attempt"):
        started = attempt["at"] - attempt["latency_ms"] / 1000
        assert started <= began[attempt["call_id"]] + DEADLINE + 0.01, attempt


@pytest.mark.usefixtures("quick_backoff")
async def test_interactive_failures_are_reported_in_time_classified_with_their_request_id(tmp_path: Path) -> None:
    emulator = Emulator(EmulatorConfig(scenario=chaos_scenario(seed=19)))
    job, records = await chaos(tmp_path, lambda **o: async_keel_client(emulator, **o), INTERACTIVE, "raise")
    served = emulator.access_log.entries()
    report("interactive, in-process", job, served)
    status_of = {e.request_id: e.status for e in served}
    assert len(job.failures) > 0
    for err, took in job.failures:
        assert took <= DEADLINE + SLACK, f"{err} took {took:.2f} s"
        error_class = err.error_class.name
        request_id = err.request_id
        if error_class == "connection":  # a reset: no answer, so no request_id to report
            assert request_id is None
            continue
        assert request_id in status_of, f"{err}: its request_id was not served"
        status = status_of[request_id]
        if status == 200:  # a stream that broke after its 200
            assert error_class in ("mid_stream", "stream_interrupted"), err
        else:
            assert error_class == CLASS_OF_STATUS[status], err
    # every 429 ended its call at once: its retry-after would overrun the deadline
    rate_limited = [e.request_id for e in served if e.status == 429]
    reported = [err.request_id for err, _ in job.failures if err.error_class.name == "rate_limited"]
    assert sorted(rate_limited) == sorted(reported) and rate_limited
    assert attempt_pairs(records) == served_pairs(served)
    assert_no_attempt_began_after_the_deadline(records)
    assert set(Counter(job.effects).values()) == {1}  # no tool ran twice, whatever failed after it
    failed_calls = [r for r in records if r["kind"] == "call" and r["error_class"]]
    assert len(failed_calls) == len(job.failures)
