"""Load: the emulator and keel proxy, each in a process of its own, hold waves of concurrent streams and calls driven
by keel's AsyncClient, without an error and without memory that grows from wave to wave (bench/reliability_load.py,
which `make test` runs small and `make soak` at the full 500 streams, 2,000 calls and 200 proxied streams)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from reliability_helpers import SOAK, scale

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_emulator_and_the_proxy_hold_concurrent_waves_without_errors_or_growing_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import reliability_load as load

    streams, calls, proxied = scale(50, 500), scale(150, 2000), scale(25, 200)
    parts = asyncio.run(load.measure(streams, calls, proxied, waves=3 if SOAK else 2))
    for part in parts:
        load.report(part)
        assert part.errors == {}, part.waves[0].examples
        assert part.completed == part.size * len(part.waves)  # every answer whole (checked as each arrived)
        assert part.bounded(), (part.name, part.rss_before_mb, [wave.rss_after_mb for wave in part.waves])
    assert [(p.name, p.size) for p in parts] == [
        ("emulator streams", streams),
        ("emulator calls", calls),
        ("proxy streams", proxied),
    ]
