"""What only the Redis tool store does: chosen by configuration, an unreachable server at start, and a server
restarting mid-run (nothing runs unrecorded while it is down; recorded results survive on an append-only file)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from ratelimit_helpers import REDIS_URL, PrivateRedis, redis_skip_reason

from keel import StoreUnavailable
from keel.stores import RedisStore, SQLiteStore
from keel.tools import at_most_once, default_store

UNREACHABLE_URL = "redis://user:secret@127.0.0.1:1/0"


def test_default_store_follows_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = redis_skip_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_HOME", raising=False)
    monkeypatch.delenv("KEEL_REDIS_URL", raising=False)
    assert isinstance(default_store(), SQLiteStore)
    (tmp_path / "keel.toml").write_text(f'[stores]\nredis_url = "{REDIS_URL}"\n')
    from_file = default_store()
    assert isinstance(from_file, RedisStore) and from_file is default_store()  # one per process and URL
    monkeypatch.setenv("KEEL_REDIS_URL", UNREACHABLE_URL)  # the environment wins over the file
    with pytest.raises(StoreUnavailable):
        default_store()
    from_file.close()


def test_unreachable_redis_at_start_is_a_clear_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_REDIS_URL", UNREACHABLE_URL)
    ran: list[int] = []

    @at_most_once
    def send(input: dict[str, Any]) -> int:
        ran.append(1)
        return 1

    with pytest.raises(StoreUnavailable) as caught:
        send({"to": "ada"}, conversation="c")
    message = "".join(traceback.format_exception(caught.value))
    assert "at-most-once tool store at redis://user:***@127.0.0.1:1/0 is unreachable" in message
    assert "secret" not in message and isinstance(caught.value, ConnectionError)
    assert ran == [] and not (tmp_path / ".keel").exists()  # no silent fallback to a local file


def test_a_redis_restart_mid_run_loses_nothing_and_runs_nothing_unrecorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(tmp_path, password="hunter2-secret", persistent=True)
    server.start()
    store = RedisStore(server.url, reconnect_for=10)
    sent: list[str] = []

    @at_most_once(store=store, name="send_email")
    def send(input: dict[str, Any]) -> str:
        sent.append(input["to"])
        return f"sent to {input['to']}"

    try:
        assert send({"to": "ada"}, conversation="c") == "sent to ada"
        server.kill()
        results: list[str] = []
        waiter = threading.Thread(target=lambda: results.append(send({"to": "bob"}, conversation="c")))
        with caplog.at_level(logging.WARNING, logger="keel.stores"):
            waiter.start()
            time.sleep(0.5)
            assert sent == ["ada"] and results == []  # waiting for its claim to be recorded: not run
            server.start()  # the same port and append-only file
            waiter.join(timeout=10)
        assert results == ["sent to bob"] and sent == ["ada", "bob"]
        assert send.run({"to": "ada"}, conversation="c").replayed  # recorded before the restart, kept
        assert send.run({"to": "bob"}, conversation="c").replayed and sent == ["ada", "bob"]
        assert f"at-most-once tool store at redis://default:***@127.0.0.1:{server.port}/0 unreachable" in caplog.text
        assert "answers again" in caplog.text and "hunter2" not in caplog.text + repr(store) + repr(store._net)
    finally:
        store.close()
        server.kill()


def test_a_redis_down_for_longer_than_reconnect_for_raises_and_runs_nothing(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="pw")
    server.start()
    store = RedisStore(server.url, reconnect_for=0.3)
    ran: list[int] = []

    @at_most_once(store=store)
    def charge(input: dict[str, Any]) -> int:
        ran.append(1)
        return 1

    try:
        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"default:\*\*\*@"):
            charge({"amount": 5}, conversation="c")
        assert 0.3 <= time.monotonic() - started < 3 and ran == []
    finally:
        store.close()
        server.kill()
