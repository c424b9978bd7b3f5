"""Attempt and call records: the JSONL sink, the `keel` logger with JsonFormatter, content opt-in, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from keel_helpers import ask, fault, keel_client

from keel import CallFailed, Client
from keel._call import new_call_id
from keel._records import CallRecord, JsonFormatter, JsonlSink, Recorder, Usage, read_records, record_dict
from keel.emulator import Emulator, EmulatorConfig, client

MODEL = "claude-sonnet-5-5"


def as_json(record: Any) -> dict[str, Any]:
    """A record as its JSONL line reads back."""
    return json.loads(json.dumps(record_dict(record), default=str))  # type: ignore[no-any-return]


def gathering_client(
    emulator: Emulator, tmp_path: Path, *, flush_seconds: float, log_content: bool = False
) -> tuple[Path, JsonlSink, Client]:
    """A client whose records file gathers successful calls' records for `flush_seconds`."""
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path, flush_seconds=flush_seconds)
    return path, sink, keel_client(emulator, records=Recorder(sink), log_content=log_content)


def plain_call_record(request_id: str) -> CallRecord:
    """A successful call's record, made by hand."""
    return CallRecord("call_x", "standard", "interactive", MODEL, request_id, "end_turn", "end_turn",
                      Usage(), None, 1.0, None, 1, 0, 1, None, None)  # fmt: skip


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the `keel` logger emits through a real StreamHandler with JsonFormatter (and the root, at DEBUG)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    keel_logger, root = logging.getLogger("keel"), logging.getLogger()
    levels = keel_logger.level, root.level
    root.addHandler(handler)
    keel_logger.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        keel_logger.setLevel(levels[0])
        root.setLevel(levels[1])


def test_one_attempt_line_per_http_attempt_and_one_call_line_per_call(keel_emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=path)
    made: list[CallRecord] = []
    keel_emulator.inject("stream_error_after=6", limit=1)  # one stream breaks mid-answer and is resumed
    resumed = keel.messages.stream(
        model=MODEL, max_tokens=60, messages=ask("r [[keel:words=10]]"), on_interrupt="continue"
    )
    with resumed:
        resumed.until_done()
    assert resumed.reply is not None and resumed.reply.record.rounds == 2
    made.append(resumed.reply.record)
    keel_emulator.inject("status=529; retry_after_ms=1", probability=0.25)
    keel_emulator.inject("status=500; retry_after_ms=1", probability=0.3)
    per_call = [
        None,
        "status=529; times=2; retry_after_ms=1",
        "status=429; error_code=enforced_spend_limit_reached",
        "status=400",
        None,
        "status=529; retry_after_ms=1",
        "stream",
    ]
    for n in range(3):
        for spec in per_call:
            try:
                if spec == "stream":
                    with keel.messages.stream(model=MODEL, max_tokens=60, messages=ask(f"s{n} [[keel:words=9]]")) as s:
                        s.until_done()
                    assert s.reply is not None
                    made.append(s.reply.record)
                else:
                    headers = fault(spec) if spec else None
                    reply = keel.messages.create(
                        model=MODEL, max_tokens=60, messages=ask(f"c{n}"), extra_headers=headers
                    )
                    made.append(reply.record)
            except CallFailed as err:
                made.append(err.record)
    keel.close()

    lines = read_records(path)
    attempts = [line for line in lines if line["kind"] == "attempt"]
    calls = [line for line in lines if line["kind"] == "call"]
    served = keel_emulator.access_log.entries()
    # one attempt line per HTTP response, in order, with the emulator's request-id, status and retry count
    assert [a["request_id"] for a in attempts] == [e.request_id for e in served]
    assert [a["status"] for a in attempts] == [e.status for e in served]
    assert [a["retry_count"] for a in attempts] == [e.retry_count for e in served]
    assert {e.status for e in served} >= {200, 400, 429, 500, 529}  # the mix really happened
    # one call line per call, identical to the record the caller got
    assert calls == [as_json(record) for record in made]
    assert len({c["call_id"] for c in calls}) == len(made)
    for call in calls:
        mine = [a for a in attempts if a["call_id"] == call["call_id"]]
        assert [a["attempt"] for a in mine] == list(range(1, call["attempts"] + 1))
        assert call["request_id"] == mine[-1]["request_id"]
        if call["error_class"] is None:
            assert mine[-1]["status"] == 200
        else:
            assert mine[-1]["error_class"] == call["error_class"]
    storm = made[2]  # the first "status=529; times=2": two 529s, then the SDK's third attempt succeeds
    assert storm.error_class is None and storm.attempts >= 3 and storm.retries == storm.attempts - 1
    assert [a["status"] for a in attempts if a["call_id"] == storm.call_id][:2] == [529, 529]
    assert [c["error_class"] for c in calls].count("spend_cap") == 3


def test_keel_logger_with_json_formatter_puts_record_fields_at_the_top_level(
    keel_emulator: Emulator, tmp_path: Path, log_output: io.StringIO
) -> None:
    path = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=path)
    keel.messages.create(
        model=MODEL, max_tokens=60, messages=ask("x"), extra_headers=fault("status=529; times=1; retry_after_ms=1")
    )
    with pytest.raises(CallFailed):
        keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"), extra_headers=fault("status=403"))
    with keel.messages.stream(model=MODEL, max_tokens=60, messages=ask("s")) as stream:
        stream.until_done()
    keel.close()

    logged = [json.loads(line) for line in log_output.getvalue().splitlines()]  # every line parses
    from_keel = [entry for entry in logged if entry["logger"] == "keel" and "kind" in entry]
    in_file = read_records(path)
    assert len(from_keel) == len(in_file) == 7  # 2 + 1 + 1 attempts, 3 calls
    for entry, record in zip(from_keel, in_file, strict=True):
        failed_call = entry["kind"] == "call" and entry["error_class"] is not None
        assert entry["level"] == ("WARNING" if failed_call else "INFO") and isinstance(entry["ts"], float)
        assert {key: entry[key] for key in record} == record  # the record's fields, top level, same values
        assert record["request_id"] in entry["message"]
    calls = [entry for entry in from_keel if entry["kind"] == "call"]
    assert [c["error_class"] for c in calls] == [None, "permission", None]
    assert calls[0]["usage"]["output_tokens"] > 0 and calls[0]["attempts"] == 2


def test_json_formatter_keeps_plain_messages_and_exceptions() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("keel.test_records")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("plain %s", "text")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    plain, failed = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert plain["message"] == "plain text" and plain["level"] == "WARNING" and "kind" not in plain
    assert failed["level"] == "ERROR" and "RuntimeError: boom" in failed["exc_info"]


SYSTEM = "SYSTEM-marker-0451 be brief"
PROMPT = "PROMPT-marker-9173 tell me about rivers"


def _traffic(keel: Client) -> tuple[str, list[CallRecord]]:
    """A success, a stream and a failure carrying the marked prompt; returns the reply text and the records."""
    reply = keel.messages.create(model=MODEL, max_tokens=80, system=SYSTEM, messages=ask(PROMPT))
    with keel.messages.stream(model=MODEL, max_tokens=80, system=SYSTEM, messages=ask(PROMPT)) as stream:
        stream.until_done()
    with pytest.raises(CallFailed) as caught:
        keel.messages.create(
            model=MODEL, max_tokens=80, system=SYSTEM, messages=ask(PROMPT), extra_headers=fault("status=400")
        )
    assert stream.reply is not None
    return reply.text, [reply.record, stream.reply.record, caught.value.record]


def test_content_is_not_recorded_by_default(keel_emulator: Emulator, tmp_path: Path, log_output: io.StringIO) -> None:
    path = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=path)
    text, records = _traffic(keel)
    keel.close()
    written = path.read_text()
    calls = [r for r in read_records(path) if r["kind"] == "call"]
    assert len(calls) == 3 and all("content" in c and c["content"] is None for c in calls)
    assert all(record.content is None for record in records)
    # keel's own log lines (the SDK's DEBUG "Request options" line does show the body: that is the SDK's)
    keel_lines = [line for line in log_output.getvalue().splitlines() if json.loads(line)["logger"] == "keel"]
    assert len(keel_lines) == 6
    for secret in ("PROMPT-marker", "SYSTEM-marker", text):
        assert secret not in written
        assert all(secret not in line for line in keel_lines)


def test_log_content_records_the_prompt_and_the_answer(keel_emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=path, log_content=True)
    text, _ = _traffic(keel)
    keel.close()
    calls = [r for r in read_records(path) if r["kind"] == "call"]
    for call in calls:
        assert call["content"]["system"] == SYSTEM
        assert call["content"]["messages"] == ask(PROMPT)
    ok, streamed, failed = (call["content"]["response"] for call in calls)
    assert ok == [{"type": "text", "text": text, "citations": None}]
    assert streamed and streamed[0]["type"] == "text"
    assert failed is None
    assert "PROMPT-marker-9173" in path.read_text()


KEY = "sk-test-SECRET-value-123"
WRONG_KEY = "sk-test-WRONG-key-456"


def test_api_keys_never_reach_records_logs_or_errors(tmp_path: Path, log_output: io.StringIO) -> None:
    emulator = Emulator(EmulatorConfig(api_key=KEY))
    path = tmp_path / "records.jsonl"
    good = Client(client(emulator, api_key=KEY, _strict_response_validation=True), records=path, log_content=True)
    wrong = Client(client(emulator, api_key=WRONG_KEY), records=path, log_content=True)
    texts: list[str] = []
    reply = good.messages.create(model=MODEL, max_tokens=60, messages=ask("hello"))
    retried = good.messages.create(
        model=MODEL, max_tokens=60, messages=ask("again"), extra_headers=fault("status=529; times=1; retry_after_ms=1")
    )
    with good.messages.stream(model=MODEL, max_tokens=60, messages=ask("stream [[keel:words=10]]")) as stream:
        stream.until_done()
    texts += [repr(reply.record), repr(retried.record), repr(stream.reply)]
    failures: list[CallFailed] = []
    for keel, headers in (
        (wrong, None),
        (good, fault("status=529; retry_after_ms=1")),
        (good, fault("status=500; retry_after_ms=1")),
    ):
        with pytest.raises(CallFailed) as caught:
            keel.messages.create(model=MODEL, max_tokens=60, messages=ask("fail"), extra_headers=headers)
        failures.append(caught.value)
    with (
        pytest.raises(CallFailed) as caught_stream,
        wrong.messages.stream(model=MODEL, max_tokens=60, messages=ask("s")) as failing,
    ):
        failing.until_done()
    failures.append(caught_stream.value)
    good.close()
    wrong.close()

    assert [f.error_class.name for f in failures] == ["authentication", "overloaded", "server_error", "authentication"]
    assert [e.status for e in emulator.access_log.entries()].count(401) == 2
    for failure in failures:
        texts += [str(failure), repr(failure), failure.record.summary(), repr(failure.record)]
    records = path.read_text()
    assert records.count('"kind":"call"') == 7
    logged = log_output.getvalue()
    assert '"request_id"' in logged  # the handler did capture keel's records
    for haystack in (records, logged, *texts):
        for needle in (KEY, WRONG_KEY, "SECRET-value", "WRONG-key"):
            assert needle not in haystack


def test_read_records_stops_at_a_bad_line_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"kind": "attempt"}\n\n{"kind": \n[1]\n')
    with pytest.raises(ValueError, match=r"records\.jsonl:3: not a JSON record"):
        read_records(path)
    path.write_text('{"kind": "attempt"}\n\n[1]\n')
    with pytest.raises(ValueError, match=r"records\.jsonl:3: not a JSON record: a JSON list"):
        read_records(path)
    path.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert read_records(path) == [{"a": 1}, {"b": 2}]


def test_a_record_that_cannot_be_written_never_fails_the_call(
    keel_emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keel = keel_client(keel_emulator, records=tmp_path / "records.jsonl")
    assert keel.settings.recorder.sink is not None
    keel.settings.recorder.sink.close()  # as good as a full disk: every write now fails
    with caplog.at_level(logging.WARNING, logger="keel"):
        first = keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"))
        second = keel.messages.create(model=MODEL, max_tokens=60, messages=ask("y"))
    assert first.request_id and second.request_id  # both calls answered, billed, returned
    warnings = [r for r in caplog.records if "records are not being written" in r.getMessage()]
    assert len(warnings) == 1  # said once, not on every call


def test_sink_gathers_successful_lines_and_writes_errors_at_once(keel_emulator: Emulator, tmp_path: Path) -> None:
    path, sink, keel = gathering_client(keel_emulator, tmp_path, flush_seconds=3600)
    keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"))
    assert path.read_text() == ""  # a successful call's two lines wait for the next write
    with pytest.raises(CallFailed):
        keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"), extra_headers=fault("status=400"))
    kinds = [(r["kind"], r["error_class"]) for r in read_records(path)]
    assert kinds == [("attempt", None), ("call", None), ("attempt", "invalid_request"), ("call", "invalid_request")]
    keel.messages.create(model=MODEL, max_tokens=60, messages=ask("y"))
    sink.close()  # what is left is written on close (and at interpreter exit)
    assert len(read_records(path)) == 6


def test_recorded_content_is_the_conversation_as_sent_even_if_the_caller_changes_it_later(
    keel_emulator: Emulator, tmp_path: Path
) -> None:
    # nothing is written until close: the record waits in memory
    path, sink, keel = gathering_client(keel_emulator, tmp_path, flush_seconds=3600, log_content=True)
    conversation = ask("first question")
    reply = keel.messages.create(model=MODEL, max_tokens=60, messages=conversation)
    conversation.append({"role": "assistant", "content": reply.text})  # a chat loop carries on with the same list
    conversation.append({"role": "user", "content": "second question"})
    sink.close()
    call = next(r for r in read_records(path) if r["kind"] == "call")
    assert call["content"]["messages"] == ask("first question")


def test_call_ids_are_unique_across_threads_and_forked_processes(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_call_id() for _ in range(2000)], range(4)))
    ids = [call_id for batch in batches for call_id in batch]
    assert len(set(ids)) == len(ids) == 8000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, as the parent goes on making its own
        os.close(read)
        os.write(write, " ".join(new_call_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    parent = {new_call_id() for _ in range(100)}
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 100 and not child & parent and not child & set(ids)


def test_a_quiet_process_still_writes_its_records_within_the_flush_window(
    keel_emulator: Emulator, tmp_path: Path
) -> None:
    path, sink, keel = gathering_client(keel_emulator, tmp_path, flush_seconds=0.05)
    reply = keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"))
    deadline = time.monotonic() + 5
    while not path.read_text() and time.monotonic() < deadline:  # no further call comes to write it
        time.sleep(0.01)
    lines = read_records(path)
    assert [r["kind"] for r in lines] == ["attempt", "call"]
    assert lines[1]["request_id"] == reply.request_id and lines[1]["cost_usd"] == reply.cost_usd
    sink.close()


def test_a_forked_child_does_not_write_the_parents_gathered_records_again(
    keel_emulator: Emulator, tmp_path: Path
) -> None:
    path, sink, keel = gathering_client(keel_emulator, tmp_path, flush_seconds=3600)
    parent_call = keel.messages.create(model=MODEL, max_tokens=60, messages=ask("before the fork"))
    pid = os.fork()
    if pid == 0:  # the child (no emulator thread here) writes a record of its own and closes its copy
        try:
            sink.write([plain_call_record("req_child")], urgent=False)
            sink.close()
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    sink.close()
    calls = [r["request_id"] for r in read_records(path) if r["kind"] == "call"]
    assert sorted(calls) == sorted([parent_call.request_id, "req_child"])  # the parent's call once, the child's


def test_a_record_that_cannot_be_built_is_reported_and_the_others_are_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keel._records import DeferredCallRecord

    def broken() -> CallRecord:
        raise TypeError("usage.input_tokens: expected a token count, got 'many'")

    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path, flush_seconds=3600)
    sink.write([plain_call_record("req_before")], urgent=False)
    sink.write([DeferredCallRecord(broken)], urgent=False)
    sink.write([DeferredCallRecord(lambda: plain_call_record("req_after"))], urgent=False)
    with caplog.at_level(logging.WARNING, logger="keel"):
        sink.close()
    assert [r["request_id"] for r in read_records(path)] == ["req_before", "req_after"]
    assert "expected a token count" in caplog.text


def test_a_kept_reply_keeps_its_message_and_record_but_not_its_call(keel_emulator: Emulator, tmp_path: Path) -> None:
    """Replies are often kept (a gathered batch of them): what each keeps alive, the garbage collector walks."""
    import functools
    import gc
    import types
    from contextvars import Token

    from keel._call import Call, Reply
    from keel._records import DeferredCallRecord

    _, sink, keel = gathering_client(keel_emulator, tmp_path, flush_seconds=3600)
    reply = keel.messages.create(model=MODEL, max_tokens=60, messages=ask("x"))
    walk = (Reply, DeferredCallRecord, functools.partial, types.MethodType, tuple, dict, list, Call, Token)

    def reachable() -> list[object]:  # what the reply holds, through keel's own holders (not the SDK's message)
        seen, todo = [], [reply._record]
        while todo:
            item = todo.pop()
            seen.append(item)
            todo += [ref for ref in gc.get_referents(item) if isinstance(ref, walk)]
        return seen

    assert not any(isinstance(item, Call | Token) for item in reachable())
    sink.flush()  # the record is built: what it was built from is let go
    assert reply.record.request_id and not any(isinstance(item, functools.partial) for item in reachable())
