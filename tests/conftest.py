"""keel's own tests use the `keel` pytest plugin (keel.testing), registered through the package entry point."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import pytest
from keel_helpers import shell_for
from pg_helpers import schema_url

from keel.batch import SQLiteLedger, SQLLedger
from keel.bulk import RunLedger, SQLRunLedger
from keel.emulator import Emulator, EmulatorConfig, client

L = TypeVar("L")


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


def _openers(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite: Callable[[Path], L], postgres: Callable[[str], L]
) -> Iterator[Callable[..., L]]:
    """Opens ledgers of one kind (`request.param`): `opener()` the test's ledger, `opener("other")` another one, each
    call a new object on that ledger (as a later process would open it). SQLite: files in the test's folder;
    PostgreSQL: the machine's server, each ledger in a schema of its own, dropped afterwards."""
    opened: list[Any] = []
    with ExitStack() as stack:
        urls: dict[str, str] = {}

        def open_ledger(name: str = "ledger") -> L:
            if request.param == "sqlite":
                ledger = sqlite(tmp_path / f"{name}.db")
            else:
                if name not in urls:
                    urls[name] = stack.enter_context(schema_url())
                ledger = postgres(urls[name])
            opened.append(ledger)
            return ledger

        open_ledger.kind = request.param  # type: ignore[attr-defined]
        open_ledger.urls = urls  # type: ignore[attr-defined]
        yield open_ledger
        for ledger in opened:
            ledger.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SQLLedger]]:
    """Opens batch ledgers of one kind (see `_openers`)."""

    def postgres(url: str) -> SQLLedger:
        from keel.batch.postgres import PostgresLedger

        return PostgresLedger(url)

    yield from _openers(request, tmp_path, SQLiteLedger, postgres)


@pytest.fixture(params=["sqlite", "postgres"])
def run_ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SQLRunLedger]]:
    """Opens run ledgers of one kind (see `_openers`)."""

    def postgres(url: str) -> SQLRunLedger:
        from keel.bulk.postgres import PostgresRunLedger

        return PostgresRunLedger(url)

    yield from _openers(request, tmp_path, RunLedger, postgres)


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own backoff (0.5 s, doubling) at a hundredth: the same retries, sooner."""
    monkeypatch.setattr(anthropic._base_client, "INITIAL_RETRY_DELAY", 0.005)


@pytest.fixture
def served_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator over loopback (its batch clock still: tests move it), and the environment a user's shell gives the
    `keel` command: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, and KEEL_HOME under the test's folder."""
    with shell_for(Emulator(EmulatorConfig(batch_speed=0)), monkeypatch, tmp_path / "home") as emulator:
        yield emulator
