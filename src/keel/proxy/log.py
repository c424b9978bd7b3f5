"""The proxy's access log: one entry per exchange, with the upstream's request-id, status, timing and any fault.

Kept in memory (`entries()`), printed as one line each when the proxy runs in the foreground, and, with a path, also
written as JSON lines. The client's key appears only as its fingerprint (`key_id`), never itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from keel.emulator.access_log import JsonLinesLog, stamp


@dataclass(frozen=True)
class ProxyEntry:
    """One exchange through the proxy.

    Attributes:
        at: when the request arrived (seconds since the epoch).
        method: the HTTP method.
        path: the request path (without the query).
        status: the status the client got (0: none, the connection was reset).
        request_id: the upstream's `request-id` (for an injected error or an unreachable upstream, the proxy's own).
        head_ms: from the request to the response head, in ms.
        total_ms: from the request to the end of the response, in ms.
        fault: the injected fault, in the `x-keel-fault` syntax; None when none was.
        model: the request's model, when it named one.
        stream: whether the response was a stream of server-sent events.
        key_id: a fingerprint of the client's API key (never the key), when one was sent.
        retry_count: the client's `x-stainless-retry-count`, when sent.
        recorded: whether the exchange was written to the cassette.
        error: what went wrong between the proxy and the upstream, if anything (credentials redacted).
    """

    at: float
    method: str
    path: str
    status: int
    request_id: str | None
    head_ms: float
    total_ms: float
    fault: str | None
    model: str | None
    stream: bool
    key_id: str | None
    retry_count: int | None
    recorded: bool
    error: str | None

    def to_json(self) -> str:
        fields = asdict(self)
        fields["head_ms"], fields["total_ms"] = round(self.head_ms, 2), round(self.total_ms, 2)
        return json.dumps({"time": stamp(fields.pop("at")), **fields}, separators=(",", ":"))

    def line(self) -> str:
        """The entry for a person: `POST /v1/messages 200 req_… 12.3 ms (head 4.1 ms) stream fault=…`."""
        parts = [self.method, self.path, str(self.status), self.request_id or "-", f"{self.total_ms:.1f} ms"]
        parts.append(f"(head {self.head_ms:.1f} ms)")
        parts += [word for word, shown in (("stream", self.stream), ("recorded", self.recorded)) if shown]
        parts += [f"{name}={value}" for name, value in (("fault", self.fault), ("error", self.error)) if value]
        return " ".join(parts)


class ProxyLog(JsonLinesLog[ProxyEntry]):
    """What the proxy relayed, an entry per exchange."""
