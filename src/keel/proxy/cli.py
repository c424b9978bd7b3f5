"""`keel proxy`: the reverse proxy in the foreground, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel._cli_common import fail, scenario_from
from keel._exceptions import ProxyConfigError
from keel.emulator.cassette import CassetteError
from keel.emulator.server import listen

from .app import Proxy, ProxyConfig
from .server import serve_proxy


def proxy(
    upstream: Annotated[
        str, typer.Option(help="The API to forward to: https://api.anthropic.com, or a keel emulator's URL.")
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    faults: Annotated[
        Path | None, typer.Option(help="A TOML scenario file of fault rules (the emulator's language).")
    ] = None,
    record: Annotated[
        Path | None, typer.Option(help="Add every exchange to this cassette (JSONL, secrets scrubbed).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for fault probabilities.")] = None,
    access_log: Annotated[
        Path | None, typer.Option(help="Also write the access log to this file, one JSON line per exchange.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Do not print a line per exchange.")] = False,
) -> None:
    """Forward every request to the API untouched, with faults and recording: any client, any language."""
    scenario = scenario_from(faults, seed)
    config = ProxyConfig(upstream, scenario, record, access_log, echo=None if quiet else typer.echo)
    try:
        app = Proxy(config)
    except (ProxyConfigError, CassetteError) as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {err.filename}: {err.strerror or err}")
    try:
        sock = listen(host, port)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}. Pick another --port, or stop what uses it.")
    base_url = f"http://{host}:{port}"
    typer.echo(f"keel proxy listening on {base_url} -> {app.shown_upstream}  (ANTHROPIC_BASE_URL={base_url})")
    recording = f"; recording to {record}" if record else ""
    typer.echo(f"{len(scenario.rules)} fault rule(s){recording}; Ctrl-C stops it.")
    serve_proxy(app, sock)
    written = f" ({app.cassette.written} exchange(s) recorded)" if app.cassette else ""
    typer.echo(f"keel proxy stopped{written}.")
