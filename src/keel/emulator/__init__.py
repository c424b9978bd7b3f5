"""A faithful local emulator of the Claude API (Starlette ASGI app), with fault injection and an access log.

Depends on nothing else in keel. See docs/emulator.md for how a request asks for each outcome.
"""

from .access_log import AccessEntry, AccessLog
from .app import DEFAULT_API_KEY, Emulator, EmulatorConfig, create_app
from .batches import BatchStore
from .cassette import Cassette, CassetteError, read_cassette
from .clients import async_client, client
from .clock import BatchClock, Clock
from .faults import FAULT_HEADER, Fault, FaultSpecError, Scenario, load_scenario, parse_fault_header
from .ratelimit import Limits, Ramp, RateLimits
from .transport import AsyncEmulatorTransport, EmulatorTransport

__all__ = [
    "DEFAULT_API_KEY",
    "FAULT_HEADER",
    "AccessEntry",
    "AccessLog",
    "AsyncEmulatorTransport",
    "BatchClock",
    "BatchStore",
    "Cassette",
    "CassetteError",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "EmulatorTransport",
    "Fault",
    "FaultSpecError",
    "Limits",
    "Ramp",
    "RateLimits",
    "Scenario",
    "async_client",
    "client",
    "create_app",
    "load_scenario",
    "parse_fault_header",
    "read_cassette",
]
