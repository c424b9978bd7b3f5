"""pytest plugin (registered as `keel`): an emulator per test and SDK clients wired to it.

Fixtures:
- `keel_emulator`: a fresh `Emulator`; script faults with `keel_emulator.inject("status=529; times=2")`
  and read what it served from `keel_emulator.access_log`.
- `keel_anthropic` / `keel_async_anthropic`: official SDK clients talking to it in-process, with strict
  response validation and retry waits kept short.
- `keel_loopback_url`: the same emulator served over loopback (one uvicorn server per session).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from keel.emulator import Emulator, EmulatorConfig, async_client, client
from keel.emulator.server import BackgroundServer


class _Switch:
    """The session server's app: forwards to whichever test's emulator is current."""

    def __init__(self) -> None:
        self.target: Emulator | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.target is not None, "no emulator is attached to the loopback server"
        await self.target(scope, receive, send)


@pytest.fixture
def keel_emulator() -> Emulator:
    return Emulator(EmulatorConfig())


@pytest.fixture
def keel_anthropic(keel_emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    sdk = client(keel_emulator, _strict_response_validation=True)
    yield sdk
    sdk.close()


@pytest.fixture
async def keel_async_anthropic(keel_emulator: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = async_client(keel_emulator, _strict_response_validation=True)
    yield sdk
    await sdk.close()


@pytest.fixture(scope="session")
def _keel_loopback_server() -> Iterator[tuple[BackgroundServer, _Switch]]:
    switch = _Switch()
    with BackgroundServer(switch) as server:
        yield server, switch


@pytest.fixture
def keel_loopback_url(
    keel_emulator: Emulator, _keel_loopback_server: tuple[BackgroundServer, _Switch]
) -> Iterator[str]:
    server, switch = _keel_loopback_server
    switch.target = keel_emulator
    yield server.base_url
    switch.target = None
