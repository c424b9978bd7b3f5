"""At-most-once tools (keel.tools) on each store, a real SQLite file and the machine's Redis alike: replays,
keys, failures, races between threads and between processes, leases after a crash, and a retried request
against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ratelimit_helpers import REDIS_URL
from store_helpers import Kit, dump, kit

from keel.stores import Claim, MemoryStore, ToolCallStore
from keel.tools import (
    AtMostOnce,
    Execution,
    ToolOutcomeUnknown,
    ToolReplayedError,
    ToolResultNotSerializable,
    ToolWaitTimeout,
    at_most_once,
    canonical_json,
    default_store,
    tool_result,
)

MODEL = "claude-sonnet-5-5"
EMAIL = {"to": "ada@example.com", "subject": "Invoice", "amount": 12.5}


class Effects:
    """A side effect you can count: every run appends a line to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, tag: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(tag + "\n")

    @property
    def lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []


@pytest.fixture
def effects(tmp_path: Path) -> Effects:
    return Effects(tmp_path / "effects.log")


STORES = ["sqlite", "redis"]


@pytest.fixture(params=STORES)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    """Each store that processes can share: a SQLite file, and Redis."""
    with kit(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def db(shared: Kit) -> ToolCallStore:
    return shared.store


@pytest.fixture(params=[*STORES, "memory"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    """Every store, on a clock the test moves where the store allows it (Redis keeps the server's time)."""
    with kit(request.param, tmp_path, clocked=True) as made:
        yield made


def email_tool(store: ToolCallStore, effects: Effects, **options: Any) -> AtMostOnce[dict[str, Any]]:
    @at_most_once(store=store, name="send_email", **options)
    def send_email(input: dict[str, Any]) -> dict[str, Any]:
        effects(f"mail to {input['to']}")
        return {"status": "sent", "to": input["to"], "n": len(effects.lines)}

    return send_email


# -- replay and keys -------------------------------------------------------------------------------------


def test_replay_returns_stored_result_without_running_again(db: ToolCallStore, effects: Effects) -> None:
    tool = email_tool(db, effects)
    first = tool.run(EMAIL, conversation="conv-1")
    again = tool.run(dict(reversed(EMAIL.items())), conversation="conv-1")  # same input, other key order
    assert first == Execution({"status": "sent", "to": "ada@example.com", "n": 1}, False, first.key, "send_email", 1)
    assert again.replayed and again.value == first.value and again.key == first.key
    assert effects.lines == ["mail to ada@example.com"]
    record = db.get(first.key)
    assert record is not None and record.status == "done" and record.tool == "send_email"
    assert record.result_json is not None and json.loads(record.result_json) == first.value


def test_results_survive_a_new_store_on_the_same_state(shared: Kit, effects: Effects) -> None:
    first = email_tool(shared.store, effects).run(EMAIL, conversation="c")
    reopened = shared.reopen()  # as a restarted program would
    assert email_tool(reopened, effects).run(EMAIL, conversation="c").replayed
    reopened.close()  # type: ignore[attr-defined]
    assert len(effects.lines) == 1 and first.replayed is False


def test_different_conversation_or_input_runs_again(db: ToolCallStore, effects: Effects) -> None:
    tool = email_tool(db, effects)
    a = tool.run(EMAIL, conversation="conv-1")
    b = tool.run(EMAIL, conversation="conv-2")
    c = tool.run({**EMAIL, "to": "bob@example.com"}, conversation="conv-1")
    assert not (a.replayed or b.replayed or c.replayed)
    assert len({a.key, b.key, c.key}) == 3 and len(effects.lines) == 3


def test_explicit_key_replaces_input_and_conversation_and_is_scoped_by_tool(
    db: ToolCallStore, effects: Effects
) -> None:
    tool = email_tool(db, effects)
    first = tool.run(EMAIL, key="order-42")
    other_input = tool.run({**EMAIL, "to": "bob@example.com"}, key="order-42", conversation="x")
    assert other_input.replayed and other_input.value == first.value and first.key == "send_email:order-42"

    receipts: list[str] = []

    @at_most_once(store=db, key=lambda input: str(input["order"]))  # the key from the input, on the decorator
    def send_receipt(input: dict[str, Any]) -> str:
        receipts.append(input["order"])
        return f"receipt for {input['order']}"

    assert send_receipt({"order": "order-42"}) == "receipt for order-42"  # not the email's result
    assert send_receipt({"order": "order-42", "note": "again"}) == "receipt for order-42"
    assert receipts == ["order-42"] and len(effects.lines) == 1


def test_a_key_or_a_conversation_is_required(db: ToolCallStore, effects: Effects) -> None:
    with pytest.raises(TypeError, match="conversation="):
        email_tool(db, effects).run(EMAIL)
    assert effects.lines == []


def test_tool_use_id_is_not_part_of_the_key(db: ToolCallStore, effects: Effects) -> None:
    tool = email_tool(db, effects)
    blocks = [
        anthropic.types.ToolUseBlock(type="tool_use", id=f"toolu_01{n}", name="send_email", input=EMAIL) for n in "AB"
    ]
    results = [tool_result(block, [tool], conversation="c") for block in blocks]
    assert [r["tool_use_id"] for r in results] == ["toolu_01A", "toolu_01B"]
    assert results[0]["content"] == results[1]["content"] == '{"status":"sent","to":"ada@example.com","n":1}'
    assert len(effects.lines) == 1
    with pytest.raises(KeyError, match="no at-most-once tool named 'send_email'"):
        tool_result(blocks[0], {}, conversation="c")


# -- failures --------------------------------------------------------------------------------------------


def test_exception_releases_the_claim_so_a_later_attempt_runs(db: ToolCallStore, effects: Effects) -> None:
    calls: list[int] = []

    @at_most_once(store=db)
    def flaky(input: dict[str, Any]) -> int:
        calls.append(1)
        effects("attempt")
        if len(calls) == 1:
            raise ConnectionError("smtp down")
        return len(calls)

    with pytest.raises(ConnectionError, match="smtp down"):
        flaky.run({"x": 1}, conversation="c")
    assert db.get(flaky.key_for({"x": 1}, conversation="c")) is None  # nothing stored, claim released
    assert flaky.run({"x": 1}, conversation="c").value == 2
    assert flaky.run({"x": 1}, conversation="c").replayed
    assert len(effects.lines) == 2


def test_store_errors_opt_in_replays_the_failure(db: ToolCallStore, effects: Effects) -> None:
    @at_most_once(store=db, store_errors=True, name="charge_card")
    def charge(input: dict[str, Any]) -> None:
        effects("charge")
        raise ValueError("card declined")

    with pytest.raises(ValueError, match="card declined"):  # the first run raises the tool's own error
        charge.run({"card": "tok_1"}, conversation="c")
    with pytest.raises(ToolReplayedError, match="ValueError: card declined") as replay:
        charge.run({"card": "tok_1"}, conversation="c")
    assert replay.value.error_type == "ValueError" and replay.value.error_message == "card declined"
    block = anthropic.types.ToolUseBlock(type="tool_use", id="toolu_01X", name="charge_card", input={"card": "tok_2"})
    first, second = (charge.tool_result(block, conversation="c") for _ in range(2))
    assert (
        first
        == second
        == {
            "type": "tool_result",
            "tool_use_id": "toolu_01X",
            "content": "ValueError: card declined",
            "is_error": True,
        }
    )
    assert len(effects.lines) == 2  # once per input


def test_unserialisable_result_is_recorded_as_failed_not_rerun(db: ToolCallStore, effects: Effects) -> None:
    @at_most_once(store=db)
    def bad(input: dict[str, Any]) -> object:
        effects("ran")
        return {"when": object()}

    with pytest.raises(ToolResultNotSerializable) as err:
        bad.run({}, conversation="c")
    with pytest.raises(ToolReplayedError, match="not JSON-serialisable"):
        bad.run({}, conversation="c")
    assert bad.forget(err.value.key) and len(effects.lines) == 1
    with pytest.raises(ToolResultNotSerializable):
        bad.run({}, conversation="c")
    assert len(effects.lines) == 2


def test_interrupt_keeps_the_claim_until_the_lease_says_unknown(clocked: Kit, effects: Effects) -> None:
    @at_most_once(store=clocked.store, lease=4 * clocked.tick, wait_timeout=0)
    def interrupted(input: dict[str, Any]) -> None:
        effects("half done")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.run({}, conversation="c")
    with pytest.raises(ToolWaitTimeout):  # still within the lease: maybe still running
        interrupted.run({}, conversation="c")
    clocked.advance(4.2)
    with pytest.raises(ToolOutcomeUnknown):
        interrupted.run({}, conversation="c")
    assert effects.lines == ["half done"]


# -- leases ----------------------------------------------------------------------------------------------


def test_expired_claim_is_unknown_then_forget_resolve_or_takeover(clocked: Kit, effects: Effects) -> None:
    store, lease = clocked.store, 3 * clocked.tick
    tool = email_tool(store, effects, lease=lease, wait_timeout=0)
    key = tool.key_for(EMAIL, conversation="c")
    assert store.claim(key, tool="send_email", owner="crashed-process", lease=lease).acquired

    with pytest.raises(ToolWaitTimeout, match="still running elsewhere"):
        tool.run(EMAIL, conversation="c")
    clocked.advance(3.1)
    with pytest.raises(ToolOutcomeUnknown, match="may or may not have happened") as unknown:
        tool.run(EMAIL, conversation="c")
    assert unknown.value.key == key and unknown.value.record.owner == "crashed-process"
    assert effects.lines == []

    # The operator checked: the mail did go out. Record it; callers now replay it.
    tool.resolve(key, {"status": "sent", "to": "ada@example.com", "n": 0})
    assert tool.run(EMAIL, conversation="c").value["n"] == 0 and effects.lines == []

    # Another crashed claim; this time the caller accepts running it again.
    assert tool.forget(key) and store.claim(key, tool="send_email", owner="crashed-again", lease=lease).acquired
    clocked.advance(3.1)
    taken = tool.run(EMAIL, conversation="c", takeover=True)
    assert taken.took_over and taken.attempt == 2 and not taken.replayed and len(effects.lines) == 1
    assert store.complete(key, owner="crashed-again", result_json="{}") is False  # the late owner is fenced off


def test_store_claim_protocol(clocked: Kit) -> None:
    store, tick = clocked.store, clocked.tick
    lease, near = 5 * tick, pytest.approx  # Redis: the server's clock, read a moment after the client's
    first = store.claim("k", tool="t", owner="a", lease=lease)
    assert first.acquired and not first.took_over and first.record.expires_at == near(clocked.now() + lease, abs=0.1)
    assert store.claim("k", tool="t", owner="b", lease=lease, takeover=True) == Claim(False, first.record)
    clocked.advance(4)
    assert store.renew("k", owner="a", lease=lease) and not store.renew("k", owner="b", lease=lease)
    clocked.advance(4)  # 8 ticks after the claim, but renewed at 4: still alive
    assert not store.claim("k", tool="t", owner="b", lease=lease, takeover=True).acquired
    clocked.advance(1.1)
    assert store.claim("k", tool="t", owner="b", lease=lease).expired
    taken = store.claim("k", tool="t", owner="b", lease=lease, takeover=True)
    assert taken.took_over and taken.previous is not None and taken.previous.owner == "a"
    assert (taken.record.owner, taken.record.attempt) == ("b", 2)
    assert taken.record.claimed_at == near(clocked.now(), abs=0.1)
    assert not store.complete("k", owner="a", result_json="1") and not store.release("k", owner="a")
    assert store.complete("k", owner="b", result_json="2")
    record = store.get("k")
    assert record is not None and (record.status, record.result_json, record.attempt) == ("done", "2", 2)
    assert not store.renew("k", owner="b", lease=lease) and not record.expired(clocked.now() + 100)
    assert store.release("k", owner="b") and store.get("k") is None


def test_lease_is_renewed_while_a_long_tool_runs(db: ToolCallStore, effects: Effects) -> None:
    started = threading.Event()

    @at_most_once(store=db, lease=0.2, wait_timeout=5)
    def slow(input: dict[str, Any]) -> str:
        started.set()
        time.sleep(0.5)  # two and a half leases: without renewal the waiter would see it expire
        effects("slow")
        return "done"

    runner = threading.Thread(target=slow, args=({},), kwargs={"conversation": "c"})
    runner.start()
    started.wait(5)
    waiter = slow.run({}, conversation="c")  # waits; never sees an expired claim
    runner.join()
    assert waiter.replayed and waiter.value == "done" and effects.lines == ["slow"]


# -- concurrency -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*STORES, "memory"])
def test_threads_racing_run_the_tool_once(kind: str, tmp_path: Path, effects: Effects) -> None:
    with kit(kind, tmp_path) as made:
        racing_threads_run_once(made.store, effects)


def racing_threads_run_once(store: ToolCallStore, effects: Effects) -> None:
    tool = email_tool(store, effects, wait_timeout=10)
    original = tool.fn

    def slow_send(input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.1)  # every other thread arrives while the winner is running
        return original(input)

    tool.fn = slow_send
    barrier = threading.Barrier(8)
    results: list[Execution[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(tool.run(EMAIL, conversation="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8
    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    assert len({json.dumps(r.value) for r in results}) == 1 and len(effects.lines) == 1


# A racing worker's lease is long enough that a machine under load never lets it lapse mid-run (a lapsed lease
# is an outcome unknown, not a rerun); a crashing worker's is short, so the next test waits it out quickly.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    kind, target, redis_url, effects, go, mode = sys.argv[1:7]
    from keel.stores import RedisStore, SQLiteStore
    from keel.tools import AtMostOnce

    def charge(input):
        with open(effects, "a") as f:
            f.write(f"charged {input['amount']} in {os.getpid()}\\n")
        if mode == "crash":
            os._exit(3)  # dies mid-side-effect: no result, no release
        time.sleep(0.3)
        return {"charged": input["amount"], "pid": os.getpid()}

    store = SQLiteStore(target) if kind == "sqlite" else RedisStore(redis_url, prefix=target)
    tool = AtMostOnce(charge, store=store, name="charge_card", lease=0.5 if mode == "crash" else 30, wait_timeout=60)
    store.get("warm-up")  # connected, schema ready, before the start signal: the race is on claim
    Path(go + f".ready.{os.getpid()}").touch()
    while not os.path.exists(go):
        time.sleep(0.001)
    run = tool.run({"amount": 42, "currency": "EUR"}, conversation="conv-race")
    print(json.dumps({"replayed": run.replayed, "value": run.value, "key": run.key}))
    """
)


def start_workers(tmp_path: Path, shared: Kit, effects: Effects, count: int, mode: str) -> list[subprocess.Popen[str]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    go = tmp_path / "go"
    args = [sys.executable, str(script), shared.kind, shared.target, REDIS_URL]
    args += [str(effects.path), str(go), mode]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    deadline = time.monotonic() + 90  # generous: a loaded machine starts interpreters slowly
    while len(list(tmp_path.glob("go.ready.*"))) < count:
        assert time.monotonic() < deadline, [p.poll() for p in procs]
        time.sleep(0.005)
    go.touch()  # all start together
    return procs


def test_processes_racing_run_the_tool_once(tmp_path: Path, shared: Kit, effects: Effects) -> None:
    procs = start_workers(tmp_path, shared, effects, 4, "race")
    outputs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    runs = [json.loads(out) for out, _ in outputs]
    assert sorted(r["replayed"] for r in runs) == [False, True, True, True]
    assert len({json.dumps(r["value"]) for r in runs}) == 1 and len({r["key"] for r in runs}) == 1
    assert len(effects.lines) == 1 and effects.lines[0].endswith(str(runs[0]["value"]["pid"]))


def test_a_crashed_process_claim_is_surfaced_not_rerun(tmp_path: Path, shared: Kit, effects: Effects) -> None:
    (proc,) = start_workers(tmp_path, shared, effects, 1, "crash")
    proc.communicate(timeout=30)
    assert proc.returncode == 3 and len(effects.lines) == 1

    charges: list[int] = []

    def charge(input: dict[str, Any]) -> dict[str, Any]:
        charges.append(input["amount"])
        return {"charged": input["amount"], "pid": os.getpid()}

    tool = AtMostOnce(charge, store=shared.store, name="charge_card", lease=0.5, wait_timeout=5)
    request = {"amount": 42, "currency": "EUR"}
    with pytest.raises(ToolOutcomeUnknown) as unknown:  # waits out the dead process's lease, then says so
        tool.run(request, conversation="conv-race")
    assert unknown.value.record.owner.split("/")[1] == f"pid{proc.pid}" and charges == []
    taken = tool.run(request, conversation="conv-race", takeover=True)
    assert taken.took_over and taken.attempt == 2 and charges == [42]


def test_wait_timeout_is_a_clear_error(db: ToolCallStore, effects: Effects) -> None:
    tool = email_tool(db, effects, wait_timeout=0.05)
    key = tool.key_for(EMAIL, conversation="c")
    db.claim(key, tool="send_email", owner="host/pid1/busy", lease=60)
    begun = time.monotonic()
    with pytest.raises(ToolWaitTimeout, match=r"still running elsewhere \(host/pid1/busy\)") as err:
        tool.run(EMAIL, conversation="c")
    assert 0.05 <= time.monotonic() - begun < 1 and isinstance(err.value, TimeoutError) and effects.lines == []


# -- canonical keys --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def reorder(value: Any, pick: Callable[[int], int]) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        shuffled = [items.pop(pick(len(items))) for _ in range(len(items))]
        return {k: reorder(v, pick) for k, v in shuffled}
    if isinstance(value, list):
        return [reorder(v, pick) for v in value]
    return value


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.randoms(use_true_random=False))
def test_key_ignores_key_order_and_json_round_trips(input: dict[str, Any], rnd: Any) -> None:
    tool = AtMostOnce(lambda i: None, store=MemoryStore(), name="t")
    key = tool.key_for(input, conversation="c")
    assert tool.key_for(reorder(input, lambda n: rnd.randrange(n)), conversation="c") == key
    assert tool.key_for(json.loads(json.dumps(input)), conversation="c") == key  # as the SDK parses it
    assert tool.key_for(json.loads(canonical_json(input)), conversation="c") == key
    assert canonical_json(input).isascii() and len(key) == 64


@given(st.floats(allow_nan=False, allow_infinity=False).filter(float.is_integer))
def test_integral_floats_key_like_integers(x: float) -> None:
    assert canonical_json({"n": x}) == canonical_json({"n": int(x)})


def test_canonical_json_form() -> None:
    assert canonical_json({"b": [1.0, -0.0, 0.5, True, None], "a": "Zoë 😀"}) == (
        '{"a":"Zo\\u00eb \\ud83d\\ude00","b":[1,0,0.5,true,null]}'
    )
    assert canonical_json({"x": 0.1 + 0.2}) == '{"x":0.30000000000000004}'
    assert canonical_json({"s": "e\u0301"}) != canonical_json({"s": "\u00e9"})  # no Unicode normalisation
    for bad in ({"x": float("nan")}, {"x": float("inf")}):
        with pytest.raises(ValueError):
            canonical_json(bad)
    for wrong in ({1: "x"}, {"x": {1, 2}}):
        with pytest.raises(TypeError):
            canonical_json(wrong)


# -- default store ---------------------------------------------------------------------------------------


def test_default_store_lives_in_dot_keel_or_keel_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, effects: Effects
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_HOME", raising=False)
    monkeypatch.delenv("KEEL_REDIS_URL", raising=False)

    @at_most_once
    def note(input: dict[str, Any]) -> int:
        effects("note")
        return 1

    assert not (tmp_path / ".keel").exists()  # nothing on disk until the first call
    assert note({"a": 1}, conversation="c") == note({"a": 1}, conversation="c") == 1
    here = default_store()
    assert here.path == tmp_path / ".keel" / "tools.sqlite3" and here.path.exists()
    assert (tmp_path / ".keel" / ".gitignore").read_text().splitlines()[-1] == "*"

    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "elsewhere"))
    assert note({"a": 1}, conversation="c") == 1 and len(effects.lines) == 2  # another store, another record
    moved = default_store()
    assert moved.path == tmp_path / "elsewhere" / "tools.sqlite3"
    here.close()
    moved.close()


# -- end to end against the emulator ---------------------------------------------------------------------

SEND_EMAIL = {
    "name": "send_email",
    "description": "Send an email",
    "input_schema": {
        "type": "object",
        "properties": {
            "to": {"type": "string"},
            "subject": {"type": "string"},
            "urgent": {"type": "boolean"},
            "copies": {"type": "integer", "minimum": 1},
        },
        "required": ["to", "subject"],
    },
}


def test_a_retried_request_runs_the_tool_once(
    keel_anthropic: anthropic.Anthropic, shared: Kit, db: ToolCallStore, effects: Effects
) -> None:
    tool = email_tool(db, effects)
    messages: list[Any] = [{"role": "user", "content": "Send Ada the invoice. [[keel:tool=send_email]]"}]
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 400, "tools": [SEND_EMAIL], "messages": messages}

    first = keel_anthropic.messages.create(**request)
    # The same turn again, as after a lost response; this time the SDK also retries a 529 on the way.
    again = keel_anthropic.messages.create(**request, extra_headers={"x-keel-fault": "status=529; times=1"})
    calls = [next(b for b in m.content if b.type == "tool_use") for m in (first, again)]
    assert calls[0].id != calls[1].id and calls[0].input == calls[1].input

    results = [tool_result(call, [tool], conversation="conv-123") for call in calls]
    assert len(effects.lines) == 1
    assert results[0]["content"] == results[1]["content"]
    assert [r["tool_use_id"] for r in results] == [c.id for c in calls]

    # The tool_result is a valid reply: the conversation goes on.
    follow = keel_anthropic.messages.create(
        **{
            **request,
            "messages": [
                *messages,
                {"role": "assistant", "content": again.content},
                {"role": "user", "content": [results[1]]},
            ],
        }
    )
    assert follow.stop_reason == "end_turn"
    assert "keel-emulator-key" not in dump(shared)  # the API key is never stored
