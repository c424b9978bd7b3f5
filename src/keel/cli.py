"""The `keel` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.emulator import (
    DEFAULT_API_KEY,
    Emulator,
    EmulatorConfig,
    FaultSpecError,
    RateLimits,
    Scenario,
    load_scenario,
)

app = typer.Typer(help="keel: production habits for the Claude Messages API.", no_args_is_help=True)
emulator_app = typer.Typer(help="The local emulator of the Claude API.", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")


@app.command()
def tour(
    live: Annotated[bool, typer.Option(help="Run against the real API with ANTHROPIC_API_KEY.")] = False,
) -> None:
    """Walk through streaming, errors and retries against the embedded emulator (or the real API)."""
    from keel.tour import run_tour

    raise typer.Exit(run_tour(live=live))


@emulator_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    api_key: Annotated[str, typer.Option(help="The key clients must send.")] = DEFAULT_API_KEY,
    faults: Annotated[Path | None, typer.Option(help="A TOML scenario file of fault rules.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for generation and fault probabilities.")] = None,
    ttft_ms: Annotated[float, typer.Option(help="Delay before each response starts, in ms.")] = 0.0,
    tps: Annotated[float | None, typer.Option(help="Output tokens per second (default: no pacing).")] = None,
    rate_limit: Annotated[
        str | None, typer.Option(help="Enforce RPM,ITPM,OTPM buckets, e.g. 50,40000,8000 (default: report only).")
    ] = None,
) -> None:
    """Serve the emulator over HTTP until Ctrl-C."""
    from keel.emulator.server import serve as run_server

    try:
        scenario = load_scenario(faults, seed) if faults else Scenario(seed=seed or 0)
    except (FaultSpecError, OSError) as err:
        typer.echo(f"keel: bad scenario file: {err}", err=True)
        raise typer.Exit(2) from None
    limits = _rate_limits(rate_limit) if rate_limit else RateLimits()
    config = EmulatorConfig(
        api_key=api_key, seed=seed or 0, scenario=scenario, ttft_ms=ttft_ms, tps=tps, rate_limits=limits
    )
    typer.echo(f"keel emulator listening on http://{host}:{port}  (ANTHROPIC_BASE_URL=http://{host}:{port})")
    typer.echo(f"{len(scenario.rules)} fault rule(s); Ctrl-C stops it.")
    run_server(Emulator(config), host, port)
    typer.echo("keel emulator stopped.")


def _rate_limits(text: str) -> RateLimits:
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise typer.BadParameter("expected three positive whole numbers: RPM,ITPM,OTPM", param_hint="--rate-limit")
    rpm, itpm, otpm = (int(part) for part in parts)
    return RateLimits(rpm, itpm, otpm, enforce=True)


def main() -> None:
    app()
