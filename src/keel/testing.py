"""pytest plugin (registered as `keel`): an emulator per test and SDK clients wired to it, and cassettes.

Fixtures:
- `keel_emulator`: a fresh `Emulator`; script faults with `keel_emulator.inject("status=529; times=2")`
  and read what it served from `keel_emulator.access_log`.
- `keel_anthropic` / `keel_async_anthropic`: official SDK clients talking to it in-process, with strict
  response validation and retry waits kept short.
- `keel_loopback_url`: the same emulator served over loopback (one uvicorn server per session).
- `keel_client` / `keel_async_client`: a `keel.Client` / `keel.AsyncClient` wrapping those SDK clients (policy
  "interactive"; pass `policy=` per call), its records kept in `keel_records`.
- `keel_records`: a `CapturedRecords`, the records of the test's calls in memory (`.calls`, `.attempts`); give it to a
  client of your own as `records=keel_records`.

Cassettes (see docs/proxy.md):
- `@pytest.mark.keel_cassette("name")` replays `cassettes/name.jsonl` beside the test file, offline: `keel_emulator`
  answers from it (a request it does not hold fails the test, unless `on_miss="generate"`; recorded timing is not
  waited for, unless `speed=` says how fast). Faults injected into `keel_emulator` are layered on the replay.
- `pytest --keel-record` records those cassettes instead, through `keel proxy` in front of `--keel-upstream`
  (default https://api.anthropic.com) with the key in `ANTHROPIC_API_KEY`: `keel_anthropic`,
  `keel_async_anthropic` and `keel_loopback_url` then reach the upstream through the proxy, and faults injected into
  `keel_emulator` are applied by the proxy (they are never recorded). The emulator itself serves nothing then.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest

from keel._client import AsyncClient, Client
from keel._records import CapturedRecords
from keel.emulator import Emulator, EmulatorConfig, async_client, client
from keel.emulator.cassette import CassetteError
from keel.emulator.replay import DEFAULT_IGNORED, OnMiss
from keel.emulator.server import BackgroundServer

MARKER = "keel_cassette"
DEFAULT_UPSTREAM = "https://api.anthropic.com"
_RECORDED: pytest.StashKey[set[Path]] = pytest.StashKey()  # cassettes already started afresh in this session


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keel")
    group.addoption(
        "--keel-record",
        action="store_true",
        help="record the keel_cassette cassettes through keel proxy (needs ANTHROPIC_API_KEY) instead of replaying",
    )
    group.addoption(
        "--keel-upstream",
        default=DEFAULT_UPSTREAM,
        help=f"what --keel-record records from (default {DEFAULT_UPSTREAM})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name, *, on_miss='error', speed=inf, ignore=('metadata',)): replay cassettes/NAME.jsonl beside "
        "the test (pytest --keel-record records it)",
    )
    config.stash[_RECORDED] = set()


@dataclass(frozen=True)
class _Cassette:
    """What a test's `keel_cassette` marker asks for."""

    path: Path
    on_miss: OnMiss
    speed: float
    ignore: tuple[str, ...]


def _cassette(request: pytest.FixtureRequest) -> _Cassette | None:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str):
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes one cassette name, e.g. {MARKER}('greeting')")
    options: dict[str, Any] = {"on_miss": "error", "speed": math.inf, "ignore": DEFAULT_IGNORED, **marker.kwargs}
    on_miss = options["on_miss"]
    if on_miss not in ("generate", "error"):
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: on_miss must be 'generate' or 'error', got {on_miss!r}")
    path = Path(request.node.path).parent / "cassettes" / f"{marker.args[0]}.jsonl"
    return _Cassette(path, on_miss, float(options["speed"]), tuple(options["ignore"]))


class _Recording:
    """A test recording its cassette: the proxy in front of the upstream, and the key to reach it with."""

    def __init__(self, request: pytest.FixtureRequest, cassette: _Cassette, emulator: Emulator) -> None:
        from keel.proxy import BackgroundProxy, Proxy, ProxyConfig

        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise pytest.UsageError("--keel-record needs a real key in ANTHROPIC_API_KEY")
        started = request.config.stash[_RECORDED]
        if cassette.path not in started:  # the session's first test with this cassette starts it over; others add
            started.add(cassette.path)
            cassette.path.unlink(missing_ok=True)
        upstream = request.config.getoption("--keel-upstream")
        self.proxy = Proxy(ProxyConfig(upstream, scenario=emulator.config.scenario, record=cassette.path))
        self.server = BackgroundProxy(self.proxy).start()
        self.key = key

    def sdk(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=self.key, base_url=self.server.base_url, _strict_response_validation=True)

    def async_sdk(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.key, base_url=self.server.base_url, _strict_response_validation=True
        )

    def stop(self) -> None:
        self.server.stop()


class _Switch:
    """The session server's app: forwards to whichever test's emulator is current."""

    def __init__(self) -> None:
        self.target: Emulator | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.target is not None, "no emulator is attached to the loopback server"
        await self.target(scope, receive, send)


@pytest.fixture
def keel_emulator(request: pytest.FixtureRequest) -> Emulator:
    cassette = _cassette(request)
    if cassette is None or request.config.getoption("--keel-record"):
        return Emulator(EmulatorConfig())
    if not cassette.path.exists():
        pytest.fail(f"no cassette {cassette.path}: record it with pytest --keel-record (and a real key)", False)
    config = EmulatorConfig(
        replay=cassette.path, replay_speed=cassette.speed, on_miss=cassette.on_miss, replay_ignore=cassette.ignore
    )
    try:
        return Emulator(config)
    except (CassetteError, ValueError) as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def _keel_recording(request: pytest.FixtureRequest, keel_emulator: Emulator) -> Iterator[_Recording | None]:
    cassette = _cassette(request)
    if cassette is None or not request.config.getoption("--keel-record"):
        yield None
        return
    recording = _Recording(request, cassette, keel_emulator)
    yield recording
    recording.stop()


@pytest.fixture
def keel_anthropic(keel_emulator: Emulator, _keel_recording: _Recording | None) -> Iterator[anthropic.Anthropic]:
    if _keel_recording is not None:
        sdk = _keel_recording.sdk()
    else:
        sdk = client(keel_emulator, _strict_response_validation=True)
    yield sdk
    sdk.close()


@pytest.fixture
async def keel_async_anthropic(
    keel_emulator: Emulator, _keel_recording: _Recording | None
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    if _keel_recording is not None:
        sdk = _keel_recording.async_sdk()
    else:
        sdk = async_client(keel_emulator, _strict_response_validation=True)
    yield sdk
    await sdk.close()


@pytest.fixture
def keel_records() -> Iterator[CapturedRecords]:
    records = CapturedRecords()
    yield records
    records.close()


@pytest.fixture
def keel_client(keel_anthropic: anthropic.Anthropic, keel_records: CapturedRecords) -> Iterator[Client]:
    wrapped = Client(keel_anthropic, records=keel_records)
    yield wrapped
    wrapped.close()


@pytest.fixture
async def keel_async_client(
    keel_async_anthropic: anthropic.AsyncAnthropic, keel_records: CapturedRecords
) -> AsyncIterator[AsyncClient]:
    wrapped = AsyncClient(keel_async_anthropic, records=keel_records)
    yield wrapped
    await wrapped.close()


@pytest.fixture(scope="session")
def _keel_loopback_server() -> Iterator[tuple[BackgroundServer, _Switch]]:
    switch = _Switch()
    with BackgroundServer(switch) as server:
        yield server, switch


@pytest.fixture
def keel_loopback_url(
    keel_emulator: Emulator,
    _keel_loopback_server: tuple[BackgroundServer, _Switch],
    _keel_recording: _Recording | None,
) -> Iterator[str]:
    if _keel_recording is not None:
        yield _keel_recording.server.base_url
        return
    server, switch = _keel_loopback_server
    switch.target = keel_emulator
    yield server.base_url
    switch.target = None
