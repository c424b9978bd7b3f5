"""`keel call` and `keel stream`: one request, its text, then its request_id, stop_reason, usage and cost."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import anthropic

    from keel._call import Reply

DEFAULT_MODEL = "claude-sonnet-5-5"

PromptArgument = Annotated[str, typer.Argument(help="The user message.")]
ModelOption = Annotated[str, typer.Option(help="The model.")]
MaxTokensOption = Annotated[int, typer.Option(min=1, help="max_tokens.")]
SystemOption = Annotated[str | None, typer.Option(help="A system prompt.")]
StopOption = Annotated[list[str] | None, typer.Option("--stop", help="A stop sequence (again for more).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw message as JSON (the summary on stderr).")]
EmulatorOption = Annotated[bool, typer.Option(help="Send it to keel's in-process emulator (no key, no network).")]


def call(
    prompt: PromptArgument,
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 1024,
    system: SystemOption = None,
    stop: StopOption = None,
    json_output: JsonOption = False,
    emulator: EmulatorOption = False,
) -> None:
    """Send one request and print its answer, then its request_id, stop_reason, usage and cost."""
    _one("call", _params(prompt, model, max_tokens, system, stop), json_output, emulator, streamed=False)


def stream(
    prompt: PromptArgument,
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: MaxTokensOption = 1024,
    system: SystemOption = None,
    stop: StopOption = None,
    json_output: JsonOption = False,
    emulator: EmulatorOption = False,
) -> None:
    """Stream one request's answer as it arrives, then its request_id, stop_reason, usage and cost."""
    _one("stream", _params(prompt, model, max_tokens, system, stop), json_output, emulator, streamed=True)


def _params(prompt: str, model: str, max_tokens: int, system: str | None, stop: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    if system is not None:
        params["system"] = system
    if stop:
        params["stop_sequences"] = stop
    return params


def _one(command: str, params: dict[str, Any], json_output: bool, emulator: bool, *, streamed: bool) -> None:
    from keel._client import Client
    from keel._exceptions import KeelError

    with Client(_sdk(command, emulator)) as client:
        try:
            if streamed:
                with client.messages.stream(**params) as events:
                    if not json_output:
                        for text in events.text_stream:
                            typer.echo(text, nl=False)
                        typer.echo()
                    events.until_done()
                reply = events.reply
                assert reply is not None  # until_done() returned: the stream ended with a message
            else:
                reply = client.messages.create(**params)
                if not json_output:
                    typer.echo(reply.text)
        except KeelError as err:
            typer.echo(f"keel {command}: {err}", err=True)
            raise typer.Exit(1) from None
    if json_output:
        typer.echo(reply.message.model_dump_json(indent=2))
    typer.echo(_summary(reply), err=json_output)


def _sdk(command: str, emulator: bool) -> anthropic.Anthropic:
    import anthropic

    from keel import _jobcli as jobcli

    if emulator:
        from keel.emulator import Emulator, client

        return client(Emulator())
    sdk = jobcli.sdk_with_credentials(anthropic.Anthropic, command)
    jobcli.check_reachable(str(sdk.base_url), command)
    return sdk


def _summary(reply: Reply) -> str:
    from keel._budget import format_usd

    usage = reply.record.usage
    cost = "unknown (no price for the model)" if reply.cost_usd is None else format_usd(reply.cost_usd)
    return (
        f"request_id {reply.request_id}, stop_reason {reply.message.stop_reason}, "
        f"{usage.input_tokens:,} input / {usage.output_tokens:,} output tokens, cost {cost}"
    )
