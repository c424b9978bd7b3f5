"""Request validation like the real API: schema first, then the per-model rules of the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .catalog import ModelSpec, load_catalog
from .errors import ApiError, invalid
from .prompt_cache import Breakpoint, check_breakpoints
from .schema import SAMPLING_FIELDS, CountTokensRequest, MessagesRequest, ThinkingEnabled, first_error
from .tokens import PromptBlock, count_input, prompt_blocks

CURRENT_VERSION = "2026-10-21"
SUPPORTED_VERSIONS = frozenset({"2023-06-01", "2023-01-01", CURRENT_VERSION})
FORCED_TOOL_MESSAGE = 'tool_choice: type "tool" and "any" are not supported for this model.'
THINKING_FORCED_TOOL_MESSAGE = "Thinking may not be enabled when tool_choice forces tool use."
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
SYSTEM_ROLE_MESSAGE = "role 'system' is not supported on this model"
# Blocks of a server-tool loop: an assistant turn ending in one is a `pause_turn` response sent back as-is to be
# continued, which every model accepts (it is not a prefill).
SERVER_TOOL_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
    }
)


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed validation, with what generation needs to know about it."""

    body: dict[str, Any]
    model: ModelSpec
    input_tokens: int
    blocks: tuple[PromptBlock, ...]  # the prompt, as prompt caching reads it
    breakpoints: tuple[Breakpoint, ...]  # its cache breakpoints
    thinking: str  # effective thinking type: enabled / adaptive / disabled / between_tools
    thinking_requested: bool
    display: str


def check_version(version: str | None) -> str:
    if version is None:
        raise invalid("anthropic-version: header is required")
    if version not in SUPPORTED_VERSIONS:
        raise invalid(f"anthropic-version: invalid version '{version}'")
    return version


def resolve_model(name: Any) -> ModelSpec:
    spec = load_catalog().resolve(name) if isinstance(name, str) else None
    if spec is None:
        raise ApiError(404, f"model: {name}")
    return spec


def _schema(body: dict[str, Any], model_cls: type[CountTokensRequest], version: str) -> dict[str, Any]:
    """Validate against the request schema; return the body with its numbers and flags as validated.

    Validation is lax like the API's (`"max_tokens": "10"` is 10), so the rules below and the responder
    must see the coerced values, not the raw JSON ones.
    """
    if version == CURRENT_VERSION:
        for name in SAMPLING_FIELDS:
            if name in body:
                raise invalid(f"{name}: Extra inputs are not permitted")
    try:
        request = model_cls.model_validate(body)
    except ValidationError as err:
        raise invalid(first_error(err)) from None
    coerced = dict(body)
    for name in ("max_tokens", "stream", *SAMPLING_FIELDS):
        if name in coerced and name in type(request).model_fields:
            coerced[name] = getattr(request, name)
    if isinstance(request.thinking, ThinkingEnabled):
        coerced["thinking"] = {**body["thinking"], "budget_tokens": request.thinking.budget_tokens}
    return coerced


def _still_accepted(name: str, value: float) -> bool:
    """Sampling values a rejecting model still takes for backwards compatibility (OpenAPI deprecation notes:
    `temperature` 1.0, `top_p` >= 0.99; every `top_k` is rejected)."""
    return (name == "temperature" and value == 1) or (name == "top_p" and value >= 0.99)


def _check_sampling(body: dict[str, Any], spec: ModelSpec) -> None:
    if spec.sampling == "rejected":
        for name in SAMPLING_FIELDS:
            value = body.get(name)
            if value is not None and not _still_accepted(name, value):
                raise invalid(f"`{name}` is deprecated for this model.")
    elif body.get("temperature") is not None and body.get("top_p") is not None:
        raise invalid("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")


def _check_thinking(body: dict[str, Any], spec: ModelSpec, effort: str | None) -> str:
    thinking = body.get("thinking")
    kind = thinking["type"] if thinking else spec.default_thinking
    if thinking and kind in spec.thinking_rejected:
        raise invalid(spec.thinking_rejected[kind])
    limit = spec.effort_limits.get(kind)
    if limit is not None and effort is not None and effort not in limit.levels:
        raise invalid(limit.message.format(effort=effort))
    if thinking and kind == "enabled" and "max_tokens" in body and body["max_tokens"] <= thinking["budget_tokens"]:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return str(kind)


def _check_effort(body: dict[str, Any], spec: ModelSpec) -> str | None:
    output_config = body.get("output_config") or {}
    if spec.effort_levels is None and "effort" in output_config:
        # These models' schema has no `effort` field at all, so even `"effort": null` is an extra input.
        raise invalid("output_config.effort: Extra inputs are not permitted")
    effort = output_config.get("effort")
    if effort is None:
        return spec.effort_default
    if spec.effort_levels is None:
        raise invalid("output_config.effort: Extra inputs are not permitted")
    if effort not in spec.effort_levels:
        allowed = ", ".join(f"'{level}'" for level in spec.effort_levels)
        raise invalid(f"output_config.effort: Input should be one of {allowed} for this model")
    return str(effort)


def _check_tools(body: dict[str, Any], spec: ModelSpec, thinking: str) -> None:
    choice = body.get("tool_choice")
    tools = body.get("tools") or []
    if choice and choice["type"] in ("any", "tool"):
        if not spec.forced_tool_choice:
            raise invalid(FORCED_TOOL_MESSAGE)
        if thinking == "enabled" and body.get("thinking"):
            raise invalid(THINKING_FORCED_TOOL_MESSAGE)
        if not tools:
            raise invalid("tool_choice: tool_choice may only be specified while providing tools.")
        if choice["type"] == "tool" and choice["name"] not in {tool.get("name") for tool in tools}:
            raise invalid(f"tool_choice.name: Tool '{choice['name']}' not found in the provided tools.")
    names = [tool["name"] for tool in tools]
    if len(names) != len(set(names)):
        raise invalid("tools: Tool names must be unique.")


def _check_messages(messages: list[dict[str, Any]], spec: ModelSpec) -> None:
    if not messages:
        raise invalid("messages: at least one message is required")
    last = len(messages) - 1
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if message["role"] == "system" and not spec.system_messages:
            raise invalid(SYSTEM_ROLE_MESSAGE)
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks or (isinstance(content, str) and not content and index != last):
            raise invalid(
                f"messages.{index}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
        for j, block in enumerate(blocks):
            if (
                block["type"] == "text"
                and not block["text"].strip()
                and not (index == last and message["role"] == "assistant")
            ):
                raise invalid(f"messages.{index}.content.{j}.text: text content blocks must be non-empty")
        results = {block["tool_use_id"] for block in blocks if block["type"] == "tool_result"}
        if pending and message["role"] != "assistant" and not pending <= results:
            missing = ", ".join(sorted(pending - results))
            raise invalid(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
            )
        if results - pending:
            unknown = ", ".join(sorted(results - pending))
            first = next(
                j
                for j, block in enumerate(blocks)
                if block["type"] == "tool_result" and block["tool_use_id"] not in pending
            )
            raise invalid(
                f"messages.{index}.content.{first}: unexpected `tool_use_id` found in `tool_result` blocks: {unknown}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        pending = {block["id"] for block in blocks if block["type"] == "tool_use"}
    if messages[last]["role"] == "assistant" and not spec.prefill and not _is_paused_turn(messages[last]):
        raise invalid(PREFILL_MESSAGE)


def _is_paused_turn(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and bool(content) and content[-1]["type"] in SERVER_TOOL_BLOCKS


def validate(body: Any, version: str, *, count_only: bool = False) -> ValidRequest:
    """Validate a decoded request body; raises `ApiError` with the API's status and message."""
    if not isinstance(body, dict):
        raise invalid("Input should be a valid dictionary")
    body = _schema(body, CountTokensRequest if count_only else MessagesRequest, version)
    spec = resolve_model(body["model"])
    if not count_only and body["max_tokens"] > spec.max_output_tokens:
        raise invalid(
            f"max_tokens: {body['max_tokens']} > {spec.max_output_tokens}, which is the maximum allowed "
            f"number of output tokens for {spec.id}"
        )
    if version != CURRENT_VERSION:
        _check_sampling(body, spec)
    effort = _check_effort(body, spec)
    thinking = _check_thinking(body, spec, effort)
    _check_tools(body, spec, thinking)
    _check_messages(body["messages"], spec)
    blocks = tuple(prompt_blocks(body))
    breakpoints = check_breakpoints(body, blocks)
    input_tokens = count_input(blocks)
    if input_tokens > spec.context_window:
        raise invalid(f"prompt is too long: {input_tokens} tokens > {spec.context_window} maximum")
    requested = body.get("thinking") or {}
    return ValidRequest(
        body=body,
        model=spec,
        input_tokens=input_tokens,
        blocks=blocks,
        breakpoints=breakpoints,
        thinking=thinking,
        thinking_requested=requested.get("type") in ("enabled", "adaptive"),
        display=requested.get("display") or spec.display_default,
    )
