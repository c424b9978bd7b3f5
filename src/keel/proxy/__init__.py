"""keel proxy: a reverse proxy in front of the Claude API (or a `keel emulator serve`) for clients in any language.

It forwards every request untouched, passes server-sent events through as they arrive, applies the emulator's
fault scenarios to real traffic, logs one line per exchange, and records exchanges to a cassette the emulator
replays. See docs/proxy.md.
"""

from .app import Proxy, ProxyConfig
from .log import ProxyEntry, ProxyLog
from .server import BackgroundProxy, serve_proxy

__all__ = ["BackgroundProxy", "Proxy", "ProxyConfig", "ProxyEntry", "ProxyLog", "serve_proxy"]
