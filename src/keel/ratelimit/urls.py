"""Store addresses without their secrets, for errors and logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

__all__ = ["redact_text", "redact_url"]

_HIDDEN = "***"
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "token"})


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, in the user-info part (`redis://user:secret@host/0` gives
    `redis://user:***@host/0`) and in the query (`unix:///run/redis.sock?password=secret`). The user name,
    host, port, path and other parameters stay, so the address can still be recognised. A string that does not
    parse as a URL comes back as `<unparseable URL>`, since which part of it is secret cannot be told."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    redacted = url
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        redacted = redacted.replace(parts.netloc, f"{userinfo.partition(':')[0]}:{_HIDDEN}@{hostport}", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
        hidden = [(name, _HIDDEN if name.lower() in _SECRET_PARAMS else value) for name, value in pairs]
        redacted = redacted.replace(f"?{parts.query}", f"?{urlencode(hidden, safe='*')}", 1)
    return redacted


def redact_text(text: str, url: str) -> str:
    """`text` (say, a client library's error message) with every secret of `url` in it replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text.replace(url, _HIDDEN)
    secrets = [parts.password or ""]
    secrets += [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_PARAMS]
    for secret in secrets:
        for form in {secret, unquote(secret)} - {""}:
            text = text.replace(form, _HIDDEN)
    return text
