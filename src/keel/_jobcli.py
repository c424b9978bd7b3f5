"""What `keel run` and `keel batch run` share: the credentials check, where ledgers live, the pre-flight estimate
and the budget's stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import anthropic
import typer
from rich.console import Console

from ._budget import CostEstimate, format_usd
from ._exceptions import BudgetExceeded
from .stores.home import ensure_home, keel_home

SDK = TypeVar("SDK", anthropic.Anthropic, anthropic.AsyncAnthropic)

BUDGET_EXIT = 3
"""The exit status of a job stopped by its budget (2 is bad input, 1 a failure)."""


def sdk_with_credentials(make: Callable[[], SDK], command: str) -> SDK:
    """The SDK client `make` builds from the environment, checked for credentials the way the SDK looks for them
    (`ANTHROPIC_API_KEY`, `ANTHROPIC_AUTH_TOKEN`, a profile): without any, one line and exit 2, before anything is
    written, rather than a failure on the first request."""
    try:
        sdk = make()
    except anthropic.AnthropicError as err:  # a profile named, or a config folder, that cannot be read
        typer.echo(f"keel {command}: cannot load the API credentials: {err}", err=True)
        raise typer.Exit(2) from None
    if sdk.api_key is None and sdk.auth_token is None and sdk.credentials is None:
        typer.echo(
            f"keel {command}: no API credentials: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN), and "
            "ANTHROPIC_BASE_URL for another endpoint such as `keel emulator serve`",
            err=True,
        )
        raise typer.Exit(2)
    return sdk


def ledger_path(given: Path | None, filename: str, *, create: bool) -> Path:
    """The ledger file: the one given, else `filename` under $KEEL_HOME (or ./.keel), that folder made when `create`."""
    if given is not None:
        return given
    home = keel_home()
    if create:
        ensure_home(home)
    return home / filename


def show_preflight(console: Console, estimate: CostEstimate, budget_usd: float | None, spent_usd: float) -> None:
    """The pre-flight estimate, and the budget with what the job already spent."""
    console.print(f"pre-flight: {estimate.describe()}", highlight=False, soft_wrap=True)
    if budget_usd is not None:
        left = budget_usd - spent_usd
        console.print(
            f"budget: {format_usd(budget_usd)}, {format_usd(spent_usd)} spent so far, {format_usd(left)} left",
            highlight=False,
            soft_wrap=True,
        )


def stop_at_budget(console: Console, command: str, stopped: BudgetExceeded) -> NoReturn:
    console.print(
        f"keel {command}: stopped at the budget: {format_usd(stopped.spent_usd)} spent, {format_usd(stopped.left_usd)} "
        f"left of {format_usd(stopped.limit_usd)}; the next request could cost up to {format_usd(stopped.next_usd)}. "
        "Run the same command with a higher --budget-usd to carry on.",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(BUDGET_EXIT)
