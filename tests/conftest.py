"""keel's own tests use the `keel` pytest plugin (keel.testing), registered through the package entry point."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

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


@pytest.fixture
def served_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator over loopback (its batch clock still: tests move it), and the environment a user's shell gives the
    `keel` command: ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY, and KEEL_HOME under the test's folder."""
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    with BackgroundServer(emulator) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
        monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
        yield emulator
