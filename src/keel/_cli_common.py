"""What the commands that serve (`keel emulator serve`, `keel proxy`) share: refusing bad input before they listen."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from keel.emulator import FaultSpecError, Scenario, load_scenario


def fail(message: str) -> NoReturn:
    """Say what is wrong on stderr, as `keel: …`, and exit with status 2."""
    typer.echo(f"keel: {message}", err=True)
    raise typer.Exit(2)


def scenario_from(faults: Path | None, seed: int | None) -> Scenario:
    """The scenario file's rules (`--faults`), else none; a file that cannot be used exits with status 2."""
    try:
        return load_scenario(faults, seed) if faults else Scenario(seed=seed or 0)
    except (FaultSpecError, OSError) as err:
        fail(f"bad scenario file: {err}")
