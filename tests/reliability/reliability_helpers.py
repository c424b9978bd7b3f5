"""Shared by the reliability suites: `make test` runs their short versions, `make soak` (KEEL_SOAK=1) the long ones."""

from __future__ import annotations

import os

SOAK = os.environ.get("KEEL_SOAK") == "1"


def scale(short: int, long: int) -> int:
    """`long` under `make soak`, `short` otherwise: how many calls, kill points or examples a suite runs."""
    return long if SOAK else short
