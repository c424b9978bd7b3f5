"""`keel emulator serve`: the emulator over HTTP, in the foreground, until Ctrl-C."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from keel._cli_common import fail, scenario_from
from keel.emulator import DEFAULT_API_KEY, Clock, Emulator, EmulatorConfig, RateLimits
from keel.emulator.cassette import CassetteError
from keel.emulator.replay import DEFAULT_IGNORED, OnMiss

emulator_app = typer.Typer(help="The local emulator of the Claude API.", no_args_is_help=True)


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
        str | None,
        typer.Option(
            help="Enforce RPM,ITPM,OTPM per key and model class, e.g. 50,40000,8000 (default: the scenario's "
            "[limits], else report only)."
        ),
    ] = None,
    access_log: Annotated[
        Path | None, typer.Option(help="Also write the access log to this file, one JSON line per request.")
    ] = None,
    batch_speed: Annotated[
        float, typer.Option(min=0, help="Message Batches clock: simulated seconds per second (3600: an hour a second).")
    ] = 1.0,
    clock_speed: Annotated[
        float,
        typer.Option(
            min=0,
            help="Clock of the rate limits and the prompt cache: simulated seconds per second (10: a minute's limits "
            "refill in 6 s; retry-after stays in real seconds).",
        ),
    ] = 1.0,
    replay: Annotated[
        Path | None, typer.Option(help="Answer the requests this cassette holds with its recorded responses.")
    ] = None,
    replay_speed: Annotated[
        float, typer.Option(help="Replay the recorded timing this many times as fast (inf: no waiting).")
    ] = 1.0,
    on_miss: Annotated[
        OnMiss, typer.Option(help="A request the cassette does not hold: generate it, or answer a 404 (error).")
    ] = "generate",
    replay_ignore: Annotated[
        list[str] | None,
        typer.Option(help="A request field (dotted path) left out of matching; repeat it (default: metadata)."),
    ] = None,
) -> None:
    """Serve the emulator over HTTP until Ctrl-C."""
    from keel.emulator.server import listen
    from keel.emulator.server import serve as run_server

    scenario = scenario_from(faults, seed)
    config = EmulatorConfig(
        api_key=api_key,
        seed=seed or 0,
        scenario=scenario,
        ttft_ms=ttft_ms,
        tps=tps,
        rate_limits=_rate_limits(rate_limit, scenario.limits) if rate_limit else None,
        batch_speed=batch_speed,
        access_log=access_log,
        clock=Clock(speed=clock_speed),
        replay=replay,
        replay_speed=replay_speed,
        on_miss=on_miss,
        replay_ignore=tuple(replay_ignore) if replay_ignore is not None else DEFAULT_IGNORED,
    )
    try:
        emulator = Emulator(config)
    except (CassetteError, ValueError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write the access log {access_log}: {err.strerror or err}")
    try:
        try:
            sock = listen(host, port)
        except OSError as err:
            typer.echo(
                f"keel emulator serve: cannot listen on {host}:{port}: {err.strerror or err}. Pick another --port, "
                "or stop what uses it.",
                err=True,
            )
            raise typer.Exit(2) from None
        typer.echo(f"keel emulator listening on http://{host}:{port}  (ANTHROPIC_BASE_URL=http://{host}:{port})")
        replayer = emulator.replayer
        replaying = f"; replaying {replay} ({len(replayer.cassette.exchanges)} exchanges)" if replayer else ""
        typer.echo(f"{len(scenario.rules)} fault rule(s){replaying}; Ctrl-C stops it.")
        run_server(emulator, sock)
    finally:
        emulator.access_log.close()
    typer.echo("keel emulator stopped.")


def _rate_limits(text: str, scenario: RateLimits | None) -> RateLimits:
    """--rate-limit: these limits, enforced (a scenario's per-key limits and ramp are kept)."""
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise typer.BadParameter("expected three positive whole numbers: RPM,ITPM,OTPM", param_hint="--rate-limit")
    rpm, itpm, otpm = (int(part) for part in parts)
    return replace(
        scenario or RateLimits(),
        requests_per_minute=rpm,
        input_tokens_per_minute=itpm,
        output_tokens_per_minute=otpm,
        enforce=True,
    )
