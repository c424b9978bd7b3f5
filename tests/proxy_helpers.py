"""The proxy in front of a real upstream for tests: an emulator served over loopback, `keel proxy` in front of it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig
from keel.emulator.server import BackgroundServer
from keel.proxy import BackgroundProxy, Proxy, ProxyConfig, ProxyEntry

MODEL = "claude-haiku-5-5"
IDS = re.compile(r"\b(req_011C|msg_01|toolu_01|srvtoolu_01|msgbatch_01)[0-9A-Za-z]{20,}")


@dataclass
class Proxied:
    emulator: Emulator  # the upstream
    upstream: BackgroundServer
    proxy: Proxy
    server: BackgroundProxy

    @property
    def url(self) -> str:
        return self.server.base_url

    def sdk(self, *, direct: bool = False, **options: Any) -> anthropic.Anthropic:
        """The official SDK through the proxy (`direct`: straight to the upstream), strict validation."""
        options = {"api_key": DEFAULT_API_KEY, "_strict_response_validation": True, **options}
        return anthropic.Anthropic(base_url=self.upstream.base_url if direct else self.url, **options)

    def async_sdk(self, **options: Any) -> anthropic.AsyncAnthropic:
        options = {"api_key": DEFAULT_API_KEY, "_strict_response_validation": True, **options}
        return anthropic.AsyncAnthropic(base_url=self.url, **options)


@contextmanager
def proxied(config: EmulatorConfig | None = None, **proxy_options: Any) -> Iterator[Proxied]:
    """An emulator on loopback (the upstream) and the proxy in front of it, both stopped on exit."""
    emulator = Emulator(config or EmulatorConfig())
    with BackgroundServer(emulator) as upstream:
        proxy = Proxy(ProxyConfig(upstream=upstream.base_url, **proxy_options))
        with BackgroundProxy(proxy) as server:
            yield Proxied(emulator, upstream, proxy, server)


def settled(setup: Proxied, answered: str | Callable[[ProxyEntry], bool] | None) -> list[ProxyEntry]:
    """The proxy's log once it holds the exchange that answered request-id `answered` (or one matching a predicate):
    the client may hear an answer a moment before the proxy's thread logs it."""
    found = answered if callable(answered) else lambda entry: entry.request_id == answered
    deadline = time.monotonic() + 5
    while not any(found(entry) for entry in setup.proxy.log.entries()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return setup.proxy.log.entries()


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def without_ids(value: Any) -> Any:
    """A JSON value with the per-response ids (message, tool, request, batch) masked: what stays equal across runs."""
    return json.loads(IDS.sub(r"\1<id>", json.dumps(value)))


def sse_events(text: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of an SSE body."""
    events = []
    for chunk in re.split(r"\n\n+", text.strip()):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events
