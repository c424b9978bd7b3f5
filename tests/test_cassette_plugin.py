"""The `keel` pytest plugin's cassettes: `@pytest.mark.keel_cassette("name")` replays `cassettes/name.jsonl` offline;
`--keel-record` records it through `keel proxy` (here from an emulator on loopback standing in for the real API)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig
from keel.emulator.cassette import read_cassette
from keel.emulator.server import BackgroundServer

pytest_plugins = ["pytester"]


@pytest.fixture
def emulator_upstream() -> Iterator[str]:
    with BackgroundServer(Emulator(EmulatorConfig())) as upstream:
        yield upstream.base_url


INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
PLUGIN_TEST = """
import pytest

HELLO = [{"role": "user", "content": "[[keel:reply=hello from the cassette]]"}]

@pytest.mark.keel_cassette("greeting")
def test_greeting(keel_anthropic):
    reply = keel_anthropic.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=HELLO)
    assert reply.content[0].text == "hello from the cassette"

@pytest.mark.keel_cassette("greeting")
async def test_greeting_streamed(keel_async_anthropic, keel_emulator):
    async with keel_async_anthropic.messages.stream(model="claude-haiku-5-5", max_tokens=20,
                                                    messages=[{"role": "user", "content": "[[keel:words=5]]"}]) as s:
        assert len((await s.get_final_text()).split()) == 4
"""
NOT_RECORDED = """
import pytest

@pytest.mark.keel_cassette("greeting")
def test_not_in_the_cassette(keel_anthropic):
    new = [{"role": "user", "content": "new"}]
    keel_anthropic.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=new)

@pytest.mark.keel_cassette("absent")
def test_absent(keel_anthropic):
    pass
"""


def test_the_pytest_plugin_records_through_the_proxy_then_replays_offline(
    pytester: pytest.Pytester, emulator_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_greeting=PLUGIN_TEST)
    pytester.makeini(INI)
    monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)  # the "real key" of this upstream
    recorded = pytester.runpytest("--keel-record", "--keel-upstream", emulator_upstream, "-p", "no:cacheprovider")
    recorded.assert_outcomes(passed=2)
    cassette = pytester.path / "cassettes" / "greeting.jsonl"
    assert [e.is_stream for e in read_cassette(cassette).exchanges] == [False, True]  # both tests, one cassette
    assert DEFAULT_API_KEY not in cassette.read_text()

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    pytester.makepyfile(test_not_recorded=NOT_RECORDED)
    replayed = pytester.runpytest("-p", "no:cacheprovider")  # offline: the upstream is not asked
    replayed.assert_outcomes(passed=2, failed=1, errors=1)
    replayed.stdout.fnmatch_lines(
        ["*NotFoundError*keel replay: no exchange in*greeting.jsonl matches POST /v1/messages*"]
    )
    replayed.stdout.fnmatch_lines(["*no cassette*absent.jsonl: record it with pytest --keel-record*"])
