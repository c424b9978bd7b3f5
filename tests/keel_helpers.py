"""Small helpers shared by keel's client tests."""

from __future__ import annotations

from typing import Any

from keel import Client
from keel.emulator import Emulator, client


def keel_client(emulator: Emulator, **options: Any) -> Client:
    """A keel.Client over the official SDK, wired in-process to `emulator`."""
    return Client(client(emulator, _strict_response_validation=True), **options)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def fault(spec: str) -> dict[str, str]:
    return {"x-keel-fault": spec}
