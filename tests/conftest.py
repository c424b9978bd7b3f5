"""keel's own tests use the `keel` pytest plugin (keel.testing), registered through the package entry point."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from keel.emulator import Emulator, client


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
