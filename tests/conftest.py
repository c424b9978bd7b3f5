"""keel's own tests use the `keel` pytest plugin (keel.testing), registered through the package entry point."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import anthropic
import pytest
from pg_helpers import schema_url

from keel.batch import SQLiteLedger, SQLLedger
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, client
from keel.emulator.server import BackgroundServer


@pytest.fixture(params=["in-process", "loopback"])
def sdk(request: pytest.FixtureRequest, keel_emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    """The official SDK with strict validation, against the test's emulator, in-process and over loopback."""
    if request.param == "in-process":
        sdk = client(keel_emulator, _strict_response_validation=True)
    else:
        base_url = request.getfixturevalue("keel_loopback_url")
        sdk = anthropic.Anthropic(api_key="keel-emulator-key", base_url=base_url, _strict_response_validation=True)
    yield sdk
    sdk.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SQLLedger]]:
    """Opens batch ledgers of one kind: `ledgers()` the test's ledger, `ledgers("other")` another one, each call
    a new object on that ledger (as a later process would open it). SQLite: files in the test's folder;
    PostgreSQL: the machine's server, each ledger in a schema of its own, dropped afterwards."""
    opened: list[SQLLedger] = []
    with ExitStack() as stack:
        urls: dict[str, str] = {}

        def open_ledger(name: str = "ledger") -> SQLLedger:
            if request.param == "sqlite":
                ledger: SQLLedger = SQLiteLedger(tmp_path / f"{name}.db")
            else:
                from keel.batch.postgres import PostgresLedger

                if name not in urls:
                    urls[name] = stack.enter_context(schema_url())
                ledger = PostgresLedger(urls[name])
            opened.append(ledger)
            return ledger

        open_ledger.kind = request.param  # type: ignore[attr-defined]
        open_ledger.urls = urls  # type: ignore[attr-defined]
        yield open_ledger
        for ledger in opened:
            ledger.close()


@pytest.fixture
def served_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator over loopback (its batch clock still: tests move it), and the environment a user's shell gives the
    `keel` command: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, and KEEL_HOME under the test's folder."""
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    with BackgroundServer(emulator) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
        monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
        yield emulator
