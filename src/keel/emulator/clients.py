"""Official SDK clients wired to an emulator in-process (no socket)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2

from .app import DEFAULT_API_KEY, Emulator
from .transport import AsyncEmulatorTransport, EmulatorTransport

BASE_URL = "http://emulator.keel.invalid"


def client(emulator: Emulator, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> anthropic.Anthropic:
    """An `anthropic.Anthropic` whose requests go straight into `emulator`. Extra options go to the SDK."""
    http_client = httpx2.Client(transport=EmulatorTransport(emulator), base_url=BASE_URL)
    return anthropic.Anthropic(api_key=api_key, base_url=BASE_URL, http_client=http_client, **options)


def async_client(emulator: Emulator, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> anthropic.AsyncAnthropic:
    """An `anthropic.AsyncAnthropic` whose requests go straight into `emulator`."""
    http_client = httpx2.AsyncClient(transport=AsyncEmulatorTransport(emulator), base_url=BASE_URL)
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=BASE_URL, http_client=http_client, **options)
