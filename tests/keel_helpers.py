"""Small helpers shared by keel's client tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from anthropic.types import Message

from keel import AsyncClient, AsyncResilientStream, Client, KeelError, ResilientStream
from keel.emulator import DEFAULT_API_KEY, Emulator, async_client, client
from keel.emulator.server import BackgroundServer


def keel_client(emulator: Emulator, **options: Any) -> Client:
    """A keel.Client over the official SDK, wired in-process to `emulator`."""
    return Client(client(emulator, _strict_response_validation=True), **options)


def async_keel_client(emulator: Emulator, **options: Any) -> AsyncClient:
    """A keel.AsyncClient over the official SDK, wired in-process to `emulator`."""
    return AsyncClient(async_client(emulator, _strict_response_validation=True), **options)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def fault(spec: str) -> dict[str, str]:
    return {"x-keel-fault": spec}


Side = Literal["sync", "async"]
SIDES: tuple[Side, ...] = ("sync", "async")


@dataclass
class Streamed:
    """What a test read from a stream (`stream_on`), and how it ended."""

    stream: ResilientStream | AsyncResilientStream
    pieces: list[str] = field(default_factory=list)  # text pieces, or event types with read="events"
    final: Message | None = None
    error: Exception | None = None


def stream_on(
    side: Side,
    emulator: Emulator,
    *,
    read: Literal["text", "events", "until_done"] = "text",
    stop_after: int | None = None,
    options: dict[str, Any] | None = None,
    **params: Any,
) -> Streamed:
    """Open `messages.stream(**params)` on a sync or an async keel client, read it as asked (every text piece,
    every event's type, or just `until_done()`; `stop_after` N text pieces, leaving early), then close the client.
    A keel error is kept in `.error`, with what was read before it."""
    if side == "sync":
        keel = keel_client(emulator, **(options or {}))
        with keel.messages.stream(**params) as stream:
            result = Streamed(stream)
            try:
                if read == "until_done":
                    stream.until_done()
                else:
                    for item in stream.text_stream if read == "text" else (e.type for e in stream):
                        result.pieces.append(item)
                        if len(result.pieces) == stop_after:
                            break
                    else:
                        result.final = stream.get_final_message()
            except KeelError as err:
                result.error = err
        keel.close()
        return result

    async def run() -> Streamed:
        keel = async_keel_client(emulator, **(options or {}))
        async with keel.messages.stream(**params) as stream:
            result = Streamed(stream)
            try:
                if read == "until_done":
                    await stream.until_done()
                else:
                    items = stream.text_stream if read == "text" else (e.type async for e in stream)
                    async for item in items:
                        result.pieces.append(item)
                        if len(result.pieces) == stop_after:
                            break
                    else:
                        result.final = await stream.get_final_message()
            except KeelError as err:
                result.error = err
        await keel.close()
        return result

    return asyncio.run(run())


def canary_key(tag: str) -> str:
    """A key in the API's shape, made at run time so that no key-shaped string is written in the repository: what a
    test proves never reaches a file, a log or an error."""
    return "-".join(("sk", "ant", "api03", f"CANARY{tag}".ljust(86, "x"), "AA"))


@contextmanager
def shell_for(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, home: Path, api_key: str = DEFAULT_API_KEY
) -> Iterator[Emulator]:
    """`emulator` over loopback, and the environment a user's shell gives the `keel` command: ANTHROPIC_BASE_URL,
    ANTHROPIC_API_KEY, KEEL_HOME (`home`), no KEEL_DATABASE_URL."""
    with BackgroundServer(emulator) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", api_key)
        monkeypatch.setenv("KEEL_HOME", str(home))
        monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
        yield emulator
