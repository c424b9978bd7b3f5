"""Request validation: the emulator must accept and reject exactly what the real API does, with its words.

Facts come from the team's model matrix (per-model rules, exact 400 messages), its API facts and the API's
OpenAPI document, and live in the tests themselves. The model lists below are copied from the matrix on
purpose, not read from the emulator's catalog, so a wrong catalog entry fails a test.

Per-model rules are tested in pairs: the same request is accepted by one model and rejected by another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, EmulatorTransport, client

pytestmark = [
    # The SDK warns about deprecated models (the 4.5 family) and `thinking.type=enabled`; both are tested here.
    pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Using Claude with .* 'thinking.type=enabled' is deprecated:UserWarning"),
]

OLD_VERSION = {"anthropic-version": "2023-06-01"}  # the version under which temperature/top_p/top_k exist
USER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ENABLED = {"type": "enabled", "budget_tokens": 1024}

# --- the matrix (model-matrix.md §1) -------------------------------------------------------------------
RESOLVED = {  # every model the API lists, by the id a response carries
    "claude-fable-5-2": "claude-fable-5-2",
    "claude-mythos-5-2": "claude-mythos-5-2",
    "claude-fable-5-1": "claude-fable-5-1",
    "claude-mythos-5-1": "claude-mythos-5-1",
    "claude-fable-5": "claude-fable-5",
    "claude-mythos-5": "claude-mythos-5",
    "claude-opus-5-5": "claude-opus-5-5",
    "claude-opus-5": "claude-opus-5",
    "claude-sonnet-5-5": "claude-sonnet-5-5",
    "claude-haiku-5-5": "claude-haiku-5-5",
    "claude-sonnet-5": "claude-sonnet-5",
    "claude-opus-4-8": "claude-opus-4-8",
    "claude-opus-4-7": "claude-opus-4-7",
    "claude-opus-4-6": "claude-opus-4-6",
    "claude-sonnet-4-6": "claude-sonnet-4-6",
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}
ALL = list(RESOLVED)
MODELS_4_5 = ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"]
MODELS_4_6 = ["claude-opus-4-6", "claude-sonnet-4-6"]
SINCE_4_6 = [m for m in ALL if m not in MODELS_4_5]
SINCE_4_7 = [m for m in SINCE_4_6 if m not in MODELS_4_6]
NO_FORCED_TOOL = ["claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1", "claude-fable-5-2", "claude-mythos-5-1"]
FORCED_TOOL_OK = [m for m in ALL if m not in NO_FORCED_TOOL and m != "claude-mythos-5-2"]
ALWAYS_THINKING = [  # `disabled` is a 400 with the generic wording
    "claude-opus-5-5",
    "claude-fable-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-mythos-5",
    "claude-mythos-5-1",
    "claude-mythos-5-2",
]
CAN_DISABLE = [m for m in ALL if m not in ALWAYS_THINKING and m != "claude-sonnet-5-5"]
SAMPLING_REJECTED = [
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-fable-5-1",
    "claude-fable-5-2",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-haiku-5-5",
]
SAMPLING_ALLOWED = MODELS_4_6 + MODELS_4_5

# --- the exact messages (model-matrix.md §2) -----------------------------------------------------------
FORCED_TOOL = 'tool_choice: type "tool" and "any" are not supported for this model.'
THINKING_FORCED_TOOL = "Thinking may not be enabled when tool_choice forces tool use."
ENABLED_REJECTED = (
    '"thinking.type.enabled" is not supported for this model. '
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
DISABLED_REJECTED = (
    '"thinking.type.disabled" is not supported for this model. '
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
SONNET_5_5_DISABLED = (
    '"thinking.type.disabled" is not supported for this model. Use "thinking.type.between_tools" for the lowest '
    'thinking setting, or "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
BETWEEN_TOOLS_REJECTED = '"thinking.type.between_tools" is not supported for this model.'
ADAPTIVE_REJECTED = "adaptive thinking is not supported on this model"
EFFORT_WHEN_DISABLED = (
    "output_config.effort '{effort}' is not supported when thinking is disabled on this model. "
    "Use effort 'high' or below, or enable thinking."
)
NO_EFFORT_PARAMETER = "output_config.effort: Extra inputs are not permitted"
PREFILL = "This model does not support assistant message prefill. The conversation must end with a user message."
TEMPERATURE_AND_TOP_P = "`temperature` and `top_p` cannot both be specified for this model. Please use only one."


# --- helpers -----------------------------------------------------------------------------------------------


def create(sdk: anthropic.Anthropic, model: str, **params: Any) -> anthropic.types.Message:
    """A Messages call with defaults for what the test does not care about; asserts it was accepted."""
    params.setdefault("max_tokens", 2048)
    params.setdefault("messages", USER)
    message: anthropic.types.Message = sdk.messages.create(model=model, **params)
    assert message.type == "message"
    assert message.model == RESOLVED.get(model, model)
    return message


def rejected(sdk: anthropic.Anthropic, message: str | None, *, path: str = "messages", **params: Any) -> str:
    """Assert the call is a 400 invalid_request_error (with exactly `message` unless None); return the message."""
    params.setdefault("messages", USER)
    if path == "messages":
        params.setdefault("max_tokens", 2048)
    call = sdk.messages.create if path == "messages" else sdk.messages.count_tokens
    with pytest.raises(anthropic.BadRequestError) as info:
        call(**params)
    err = info.value
    assert err.status_code == 400
    assert err.type == "invalid_request_error"
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id
    assert err.api_message is not None
    if message is not None:
        assert err.api_message == message
    return err.api_message


def post_raw(sdk: anthropic.Anthropic, body: Any, *, headers: dict[str, str] | None = None) -> Any:
    """POST an arbitrary JSON body to /v1/messages through the SDK's low-level client."""
    return sdk.post("/v1/messages", body=body, cast_to=object, options={"headers": headers or {}})


@pytest.fixture
def http(keel_emulator: Emulator) -> Iterator[httpx2.Client]:
    """A plain HTTP client on the emulator, for requests the SDK would never send."""
    with httpx2.Client(transport=EmulatorTransport(keel_emulator), base_url="http://emulator.test") as c:
        yield c


AUTH = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}


def assert_error_shape(response: httpx2.Response, status: int, error_type: str) -> str:
    """The API's error body: type, error.type/message, request_id equal to the request-id header."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    return str(body["error"]["message"])


# === forced tool_choice ====================================================================================

FORCED_CHOICES = [{"type": "any"}, {"type": "tool", "name": "get_weather"}]


@pytest.mark.parametrize("tool_choice", FORCED_CHOICES, ids=["any", "tool"])
@pytest.mark.parametrize("model", [*NO_FORCED_TOOL, "claude-mythos-5-2"])
@pytest.mark.parametrize("path", ["messages", "count_tokens"])
def test_forced_tool_choice_rejected(
    keel_anthropic: anthropic.Anthropic, model: str, tool_choice: dict[str, str], path: str
) -> None:
    rejected(keel_anthropic, FORCED_TOOL, path=path, model=model, tools=[WEATHER_TOOL], tool_choice=tool_choice)


@pytest.mark.parametrize("tool_choice", FORCED_CHOICES, ids=["any", "tool"])
@pytest.mark.parametrize("model", FORCED_TOOL_OK)
def test_forced_tool_choice_accepted(keel_anthropic: anthropic.Anthropic, model: str, tool_choice: Any) -> None:
    message = create(keel_anthropic, model, tools=[WEATHER_TOOL], tool_choice=tool_choice)
    assert message.stop_reason == "tool_use"
    assert [block.name for block in message.content if block.type == "tool_use"] == ["get_weather"]
    counted = keel_anthropic.messages.count_tokens(
        model=model, messages=USER, tools=[WEATHER_TOOL], tool_choice=tool_choice
    )
    assert counted.input_tokens > 0


@pytest.mark.parametrize("model", NO_FORCED_TOOL)
def test_auto_and_none_tool_choice_accepted_where_forced_is_not(
    keel_anthropic: anthropic.Anthropic, model: str
) -> None:
    create(keel_anthropic, model, tools=[WEATHER_TOOL], tool_choice={"type": "auto"})
    create(keel_anthropic, model, tools=[WEATHER_TOOL], tool_choice={"type": "none"})


@pytest.mark.parametrize("tool_choice", FORCED_CHOICES, ids=["any", "tool"])
@pytest.mark.parametrize("model", MODELS_4_6 + MODELS_4_5)
def test_enabled_thinking_with_forced_tool_rejected_on_older_models(
    keel_anthropic: anthropic.Anthropic, model: str, tool_choice: Any
) -> None:
    rejected(
        keel_anthropic,
        THINKING_FORCED_TOOL,
        model=model,
        thinking=ENABLED,
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
    )
    # The same thinking with tool_choice auto, and the same forced choice without thinking, are fine.
    create(keel_anthropic, model, thinking=ENABLED, tools=[WEATHER_TOOL], tool_choice={"type": "auto"})
    create(keel_anthropic, model, tools=[WEATHER_TOOL], tool_choice=tool_choice)


@pytest.mark.parametrize("model", MODELS_4_6)
def test_adaptive_thinking_allows_forced_tool_on_4_6(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    message = create(
        keel_anthropic, model, thinking={"type": "adaptive"}, tools=[WEATHER_TOOL], tool_choice={"type": "any"}
    )
    assert message.stop_reason == "tool_use"


# === thinking.type ===========================================================================================


@pytest.mark.parametrize("model", SINCE_4_7)
def test_enabled_thinking_rejected_on_4_7_and_later(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(keel_anthropic, ENABLED_REJECTED, model=model, thinking=ENABLED)
    create(keel_anthropic, model, thinking={"type": "adaptive"})


@pytest.mark.parametrize("model", MODELS_4_6 + MODELS_4_5)
def test_enabled_thinking_accepted_before_4_7(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    message = create(keel_anthropic, model, thinking=ENABLED)
    assert message.content[0].type == "thinking"


def test_enabled_thinking_budget_must_stay_below_max_tokens(keel_anthropic: anthropic.Anthropic) -> None:
    message = rejected(keel_anthropic, None, model="claude-sonnet-4-5", max_tokens=1024, thinking=ENABLED)
    assert message.startswith("`max_tokens` must be greater than `thinking.budget_tokens`")
    create(keel_anthropic, "claude-sonnet-4-5", max_tokens=1025, thinking=ENABLED)


@pytest.mark.parametrize("model", ALWAYS_THINKING)
def test_disabled_thinking_rejected_where_thinking_is_always_on(
    keel_anthropic: anthropic.Anthropic, model: str
) -> None:
    rejected(keel_anthropic, DISABLED_REJECTED, model=model, thinking={"type": "disabled"})


def test_disabled_thinking_on_sonnet_5_5_points_to_between_tools(keel_anthropic: anthropic.Anthropic) -> None:
    rejected(keel_anthropic, SONNET_5_5_DISABLED, model="claude-sonnet-5-5", thinking={"type": "disabled"})


@pytest.mark.parametrize("model", CAN_DISABLE)
def test_disabled_thinking_accepted(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    message = create(keel_anthropic, model, thinking={"type": "disabled"})
    assert all(block.type != "thinking" for block in message.content)


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_between_tools_accepted_on_sonnet_5_5(keel_anthropic: anthropic.Anthropic, effort: str) -> None:
    create(keel_anthropic, "claude-sonnet-5-5", thinking={"type": "between_tools"}, output_config={"effort": effort})
    create(keel_anthropic, "claude-sonnet-5-5", thinking={"type": "between_tools"})  # default effort high


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_between_tools_on_sonnet_5_5_only_up_to_high_effort(keel_anthropic: anthropic.Anthropic, effort: str) -> None:
    # The wording of this 400 is undocumented (matrix §2): only the status and the subject are asserted.
    message = rejected(
        keel_anthropic,
        None,
        model="claude-sonnet-5-5",
        thinking={"type": "between_tools"},
        output_config={"effort": effort},
    )
    assert "between_tools" in message and effort in message
    create(keel_anthropic, "claude-sonnet-5-5", thinking={"type": "adaptive"}, output_config={"effort": effort})


@pytest.mark.parametrize("extra", [{"display": "omitted"}, {"budget_tokens": 2048}])
def test_between_tools_takes_no_other_settings(keel_anthropic: anthropic.Anthropic, extra: dict[str, Any]) -> None:
    key = next(iter(extra))
    rejected(
        keel_anthropic,
        f"thinking.between_tools.{key}: Extra inputs are not permitted",
        model="claude-sonnet-5-5",
        thinking={"type": "between_tools", **extra},
    )


@pytest.mark.parametrize("model", [m for m in ALL if m != "claude-sonnet-5-5"])
def test_between_tools_rejected_everywhere_else(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(keel_anthropic, BETWEEN_TOOLS_REJECTED, model=model, thinking={"type": "between_tools"})


@pytest.mark.parametrize("model", MODELS_4_5)
def test_adaptive_thinking_rejected_on_4_5(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(keel_anthropic, ADAPTIVE_REJECTED, model=model, thinking={"type": "adaptive"})


@pytest.mark.parametrize("model", SINCE_4_6)
def test_adaptive_thinking_accepted_from_4_6(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    create(keel_anthropic, model, thinking={"type": "adaptive"})


@pytest.mark.parametrize("display", ["updates", "full"])
def test_unknown_thinking_display_rejected(keel_anthropic: anthropic.Anthropic, display: str) -> None:
    # `updates` is beta (needs a header keel does not model); without it, the same 400 as any unknown value.
    rejected(
        keel_anthropic,
        "thinking.adaptive.display: Input should be 'summarized' or 'omitted'",
        model="claude-opus-5",
        thinking={"type": "adaptive", "display": display},
    )


# === effort ==================================================================================================


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_opus_5_cannot_disable_thinking_at_high_effort(keel_anthropic: anthropic.Anthropic, effort: str) -> None:
    rejected(
        keel_anthropic,
        EFFORT_WHEN_DISABLED.format(effort=effort),
        model="claude-opus-5",
        thinking={"type": "disabled"},
        output_config={"effort": effort},
    )
    create(keel_anthropic, "claude-opus-5", thinking={"type": "adaptive"}, output_config={"effort": effort})
    create(keel_anthropic, "claude-opus-5", output_config={"effort": effort})  # thinking omitted: adaptive


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_opus_5_can_disable_thinking_up_to_high_effort(keel_anthropic: anthropic.Anthropic, effort: str) -> None:
    create(keel_anthropic, "claude-opus-5", thinking={"type": "disabled"}, output_config={"effort": effort})


def test_opus_4_8_with_thinking_omitted_rejects_xhigh(keel_anthropic: anthropic.Anthropic) -> None:
    # Thinking is off by default on Opus 4.8, so omitting it at xhigh is "disabled at xhigh".
    rejected(
        keel_anthropic,
        EFFORT_WHEN_DISABLED.format(effort="xhigh"),
        model="claude-opus-4-8",
        output_config={"effort": "xhigh"},
    )
    create(keel_anthropic, "claude-opus-4-8", thinking={"type": "adaptive"}, output_config={"effort": "xhigh"})
    create(keel_anthropic, "claude-opus-4-8", output_config={"effort": "high"})


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_haiku_5_5_cannot_disable_thinking_at_high_effort(keel_anthropic: anthropic.Anthropic, effort: str) -> None:
    # The matrix has the rule but not its wording: only status and subject are asserted.
    message = rejected(
        keel_anthropic, None, model="claude-haiku-5-5", thinking={"type": "disabled"}, output_config={"effort": effort}
    )
    assert effort in message
    create(keel_anthropic, "claude-haiku-5-5", thinking={"type": "disabled"}, output_config={"effort": "high"})


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-5"])
@pytest.mark.parametrize("effort", ["high", None])
def test_effort_is_an_extra_input_without_the_effort_parameter(
    keel_anthropic: anthropic.Anthropic, model: str, effort: str | None
) -> None:
    rejected(keel_anthropic, NO_EFFORT_PARAMETER, model=model, output_config={"effort": effort})
    create(keel_anthropic, model, output_config={"format": None})  # output_config itself is fine


@pytest.mark.parametrize(("model", "effort"), [("claude-opus-4-6", "xhigh"), ("claude-opus-4-5", "xhigh")])
def test_effort_levels_a_model_lacks_are_rejected(keel_anthropic: anthropic.Anthropic, model: str, effort: str) -> None:
    # No xhigh on the 4.6 models nor Opus 4.5 (wording not documented); max exists on 4.6, not on Opus 4.5.
    assert rejected(keel_anthropic, None, model=model, output_config={"effort": effort}).startswith(
        "output_config.effort"
    )
    create(keel_anthropic, model, output_config={"effort": "high"})


def test_max_effort_exists_on_4_6_but_not_on_opus_4_5(keel_anthropic: anthropic.Anthropic) -> None:
    create(keel_anthropic, "claude-opus-4-6", output_config={"effort": "max"})
    message = rejected(keel_anthropic, None, model="claude-opus-4-5", output_config={"effort": "max"})
    assert message.startswith("output_config.effort")


# === prefill =================================================================================================

PREFILLED = [*USER, {"role": "assistant", "content": "The weather in Paris is"}]
MID_CONVERSATION = [*USER, {"role": "assistant", "content": "Sunny, 21°C."}, {"role": "user", "content": "And Rome?"}]


@pytest.mark.parametrize("model", SINCE_4_6)
def test_prefill_rejected_from_4_6(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(keel_anthropic, PREFILL, model=model, messages=PREFILLED)
    rejected(keel_anthropic, PREFILL, path="count_tokens", model=model, messages=PREFILLED)


def test_prefill_rejected_on_haiku_5_5_even_with_thinking_off(keel_anthropic: anthropic.Anthropic) -> None:
    rejected(keel_anthropic, PREFILL, model="claude-haiku-5-5", messages=PREFILLED, thinking={"type": "disabled"})


@pytest.mark.parametrize("model", MODELS_4_5)
def test_prefill_allowed_on_4_5(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    message = create(keel_anthropic, model, messages=PREFILLED)
    assert message.role == "assistant"


SEARCH_CALL = {"type": "server_tool_use", "id": "srvtoolu_01A", "name": "web_search", "input": {"query": "Paris"}}


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-4-6"])
def test_paused_turn_sent_back_is_not_a_prefill(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    # api-facts: on pause_turn, send the response back as-is as the assistant turn to continue.
    paused = {"role": "assistant", "content": [{"type": "text", "text": "Let me search."}, SEARCH_CALL]}
    create(keel_anthropic, model, messages=[*USER, paused])
    ends_in_text = {"role": "assistant", "content": [SEARCH_CALL, {"type": "text", "text": "The weather is"}]}
    rejected(keel_anthropic, PREFILL, model=model, messages=[*USER, ends_in_text])


@pytest.mark.parametrize("model", ALL)
def test_assistant_message_mid_conversation_allowed_everywhere(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    create(keel_anthropic, model, messages=MID_CONVERSATION)


# === sampling parameters ===================================================================================


@pytest.mark.parametrize("model", SAMPLING_REJECTED)
@pytest.mark.parametrize(("name", "value"), [("temperature", 0.5), ("temperature", 0), ("top_p", 0.5), ("top_k", 5)])
def test_sampling_deprecated_on_newer_models(
    keel_anthropic: anthropic.Anthropic, model: str, name: str, value: float
) -> None:
    rejected(
        keel_anthropic,
        f"`{name}` is deprecated for this model.",
        model=model,
        extra_body={name: value},
        extra_headers=OLD_VERSION,
    )


@pytest.mark.parametrize("model", SAMPLING_REJECTED)
def test_sampling_defaults_still_accepted_on_newer_models(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    # temperature 1 was probed live; top_p >= 0.99 is the OpenAPI deprecation note. top_k has no such value.
    create(keel_anthropic, model, extra_body={"temperature": 1}, extra_headers=OLD_VERSION)
    create(keel_anthropic, model, extra_body={"temperature": 1.0, "top_p": 0.99}, extra_headers=OLD_VERSION)
    create(keel_anthropic, model, extra_body={"temperature": None}, extra_headers=OLD_VERSION)


@pytest.mark.parametrize("model", SAMPLING_ALLOWED)
def test_sampling_allowed_on_4_5_and_4_6_but_not_temperature_with_top_p(
    keel_anthropic: anthropic.Anthropic, model: str
) -> None:
    create(keel_anthropic, model, extra_body={"temperature": 0.2, "top_k": 5}, extra_headers=OLD_VERSION)
    create(keel_anthropic, model, extra_body={"top_p": 0.5, "top_k": 5}, extra_headers=OLD_VERSION)
    rejected(
        keel_anthropic,
        TEMPERATURE_AND_TOP_P,
        model=model,
        extra_body={"temperature": 0.2, "top_p": 0.5},
        extra_headers=OLD_VERSION,
    )


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-opus-4-6", "claude-opus-5"])
@pytest.mark.parametrize(("name", "value"), [("temperature", 1), ("top_p", 0.5), ("top_k", 5)])
def test_sampling_removed_under_the_current_version(
    keel_anthropic: anthropic.Anthropic, model: str, name: str, value: float
) -> None:
    # The SDK sends anthropic-version 2026-10-21: the fields are gone on every model, even at default values.
    rejected(keel_anthropic, f"{name}: Extra inputs are not permitted", model=model, extra_body={name: value})


def test_sampling_range_is_schema_checked(keel_anthropic: anthropic.Anthropic) -> None:
    rejected(
        keel_anthropic,
        "temperature: Input should be less than or equal to 1",
        model="claude-sonnet-4-5",
        extra_body={"temperature": 1.5},
        extra_headers=OLD_VERSION,
    )


# === max_tokens and model ====================================================================================


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-haiku-4-5-20251001"])
def test_max_tokens_above_the_model_limit_names_the_resolved_id(
    keel_anthropic: anthropic.Anthropic, model: str
) -> None:
    rejected(
        keel_anthropic,
        "max_tokens: 99999 > 64000, which is the maximum allowed number of output tokens for claude-haiku-4-5-20251001",
        model=model,
        max_tokens=99999,
        timeout=30,  # skips the SDK's client-side "streaming is required" guard
    )
    create(keel_anthropic, model, max_tokens=64000, timeout=30)


@pytest.mark.parametrize("model", ["claude-sonnet-5", "claude-opus-4-6", "claude-fable-5-2"])
def test_max_tokens_limit_is_128k_on_newer_models(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(
        keel_anthropic,
        f"max_tokens: 128001 > 128000, which is the maximum allowed number of output tokens for {model}",
        model=model,
        max_tokens=128001,
        timeout=30,
    )
    create(keel_anthropic, model, max_tokens=128000, timeout=30)


def test_max_tokens_zero_prewarms_the_cache(keel_anthropic: anthropic.Anthropic) -> None:
    # OpenAPI: `minimum: 0`, "Set to 0 to populate the prompt cache without generating a response."
    message = create(keel_anthropic, "claude-opus-5", max_tokens=0)
    assert message.usage.output_tokens == 0
    assert message.stop_reason == "max_tokens"
    assert "".join(block.text for block in message.content if block.type == "text") == ""


@pytest.mark.parametrize("path", ["messages", "count_tokens"])
def test_unknown_model_is_not_found(keel_anthropic: anthropic.Anthropic, path: str) -> None:
    call = keel_anthropic.messages.create if path == "messages" else keel_anthropic.messages.count_tokens
    params: dict[str, Any] = {"max_tokens": 10} if path == "messages" else {}
    with pytest.raises(anthropic.NotFoundError) as info:
        call(model="claude-nope-9", messages=USER, **params)
    err = info.value
    assert (err.status_code, err.type, err.api_message) == (404, "not_found_error", "model: claude-nope-9")
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id


# === schema errors ===========================================================================================

OK_BODY: dict[str, Any] = {"model": "claude-opus-5", "max_tokens": 100, "messages": USER}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in OK_BODY.items() if k != key}


def with_(**changes: Any) -> dict[str, Any]:
    return {**OK_BODY, **changes}


def one_block(block: dict[str, Any]) -> dict[str, Any]:
    return with_(messages=[{"role": "user", "content": [block]}])


TOOL_USE = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
EXPECTED_BLOCK_TAGS = (
    "'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', "
    "'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result', "
    "'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', "
    "'container_upload', 'mid_conv_system'"
)

SCHEMA_ERRORS: list[tuple[str, Any, str]] = [
    ("missing model", without("model"), "model: Field required"),
    ("missing max_tokens", without("max_tokens"), "max_tokens: Field required"),
    ("missing messages", without("messages"), "messages: Field required"),
    ("model not a string", with_(model=5), "model: Input should be a valid string"),
    (
        "max_tokens not a number",
        with_(max_tokens="ten"),
        "max_tokens: Input should be a valid integer, unable to parse string as an integer",
    ),
    (
        "max_tokens fractional",
        with_(max_tokens=10.5),
        "max_tokens: Input should be a valid integer, got a number with a fractional part",
    ),
    ("max_tokens negative", with_(max_tokens=-1), "max_tokens: Input should be greater than or equal to 0"),
    ("messages not a list", with_(messages="hi"), "messages: Input should be a valid list"),
    ("unknown field", with_(foo=1), "foo: Extra inputs are not permitted"),
    ("empty messages", with_(messages=[]), "messages: at least one message is required"),
    (
        "bad role",
        with_(messages=[{"role": "bot", "content": "hi"}]),
        "messages.0.role: Input should be 'user', 'assistant' or 'system'",
    ),
    ("missing content", with_(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    ("missing text", one_block({"type": "text"}), "messages.0.content.0.text.text: Field required"),
    (
        "unknown block field",
        one_block({"type": "text", "text": "hi", "bold": True}),
        "messages.0.content.0.text.bold: Extra inputs are not permitted",
    ),
    (
        "unknown block type",
        one_block({"type": "video", "url": "x"}),
        f"messages.0.content.0: Input tag 'video' found using 'type' does not match any of the expected tags: "
        f"{EXPECTED_BLOCK_TAGS}",
    ),
    (
        "block without type",
        one_block({"text": "hi"}),
        "messages.0.content.0: Unable to extract tag using discriminator 'type'",
    ),
    (
        "empty text block",
        one_block({"type": "text", "text": ""}),
        "messages.0.content.0.text: text content blocks must be non-empty",
    ),
    (
        "empty content list",
        with_(messages=[{"role": "user", "content": []}]),
        "messages.0: all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "tool_result without tool_use",
        with_(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here:"},
                        {"type": "tool_result", "tool_use_id": "toolu_01X", "content": "21°C"},
                    ],
                },
            ]
        ),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01X. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "tool_use without tool_result",
        with_(
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": "never mind"},
            ]
        ),
        "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "thinking budget too small",
        with_(thinking={"type": "enabled", "budget_tokens": 100}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    (
        "unknown thinking type",
        with_(thinking={"type": "sometimes"}),
        "thinking: Input tag 'sometimes' found using 'type' does not match any of the expected tags: "
        "'enabled', 'adaptive', 'disabled', 'between_tools'",
    ),
    (
        "unknown effort",
        with_(output_config={"effort": "ultra"}),
        "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
    ),
    ("body not an object", [OK_BODY], "Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in SCHEMA_ERRORS], ids=[c[0] for c in SCHEMA_ERRORS])
def test_schema_errors(keel_anthropic: anthropic.Anthropic, body: Any, message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        post_raw(keel_anthropic, body)
    err = info.value
    assert (err.status_code, err.type, err.api_message) == (400, "invalid_request_error", message)
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id


def test_tool_round_trip_is_accepted(keel_anthropic: anthropic.Anthropic) -> None:
    """What a tool call returns, sent back as-is with its tool_result, passes validation."""
    first = create(keel_anthropic, "claude-opus-5", tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    call = next(block for block in first.content if block.type == "tool_use")
    messages: list[Any] = [
        *USER,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21°C"}]},
    ]
    assert create(keel_anthropic, "claude-opus-5", tools=[WEATHER_TOOL], messages=messages).stop_reason == "end_turn"


def test_every_sdk_request_field_is_accepted(keel_anthropic: anthropic.Anthropic) -> None:
    """Fields the SDK's `messages.create` sends (and the OpenAPI lists) must not be 'Extra inputs'."""
    create(
        keel_anthropic,
        "claude-opus-5",
        cache_control={"type": "ephemeral", "ttl": "1h"},
        container={"id": None, "skills": []},
        diagnostics={"previous_message_id": None},
        inference_geo="us",
        metadata={"user_id": "user-1"},
        service_tier="standard_only",
        speed="standard",
        stop_sequences=["\n\nHuman:"],
        # 1 h like the top-level breakpoint after it: a 1-hour breakpoint after a 5-minute one is a 400
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        output_config={"effort": "low"},
    )
    counted = keel_anthropic.messages.count_tokens(
        model="claude-opus-5", messages=USER, cache_control={"type": "ephemeral"}, speed="standard"
    )
    assert counted.input_tokens > 0


def test_numbers_are_coerced_like_the_api_schema_never_a_crash(keel_anthropic: anthropic.Anthropic) -> None:
    # Validation is lax pydantic (the API's "unable to parse string as an integer" wording shows it): "12" is 12.
    result = post_raw(
        keel_anthropic,
        with_(model="claude-sonnet-4-5", max_tokens="2000", thinking={"type": "enabled", "budget_tokens": "1024"}),
    )
    assert isinstance(result, dict) and result["type"] == "message"
    assert result["usage"]["output_tokens"] <= 2000


def test_stream_flag_is_coerced_too(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", content=json.dumps(with_(stream="true")).encode(), headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("event: message_start")


# Mid-conversation system messages (matrix §7, low confidence): Opus 4.8 introduced them; older models and
# Sonnet 5 reject them.
SYSTEM_TURN = [*USER, {"role": "system", "content": "Answer in one word."}]


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-opus-5", "claude-sonnet-5-5"])
def test_mid_conversation_system_message_accepted(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    create(keel_anthropic, model, messages=SYSTEM_TURN)


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-sonnet-5", "claude-sonnet-4-6", "claude-haiku-4-5"])
def test_mid_conversation_system_message_rejected(keel_anthropic: anthropic.Anthropic, model: str) -> None:
    rejected(keel_anthropic, "role 'system' is not supported on this model", model=model, messages=SYSTEM_TURN)


def test_system_message_cannot_sit_between_tool_use_and_tool_result(keel_anthropic: anthropic.Anthropic) -> None:
    tool_result = {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "21°C"}
    after_results = [
        *USER,
        {"role": "assistant", "content": [TOOL_USE]},
        {"role": "user", "content": [tool_result]},
        {"role": "system", "content": "Answer in one word."},
    ]
    create(keel_anthropic, "claude-opus-4-8", tools=[WEATHER_TOOL], messages=after_results)
    rejected(
        keel_anthropic,
        "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        model="claude-opus-4-8",
        tools=[WEATHER_TOOL],
        messages=[*after_results[:2], after_results[3], after_results[2]],
    )


# === auth ====================================================================================================

BODY = json.dumps(OK_BODY).encode()


@pytest.mark.parametrize(
    "credentials",
    [{"x-api-key": DEFAULT_API_KEY}, {"authorization": f"Bearer {DEFAULT_API_KEY}"}],
    ids=["x-api-key", "bearer"],
)
def test_both_auth_headers_accepted(http: httpx2.Client, credentials: dict[str, str]) -> None:
    response = http.post("/v1/messages", content=BODY, headers={**credentials, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    assert response.json()["type"] == "message"


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({}, "x-api-key header is required"),
        ({"authorization": "Basic a2VlbA=="}, "x-api-key header is required"),
        ({"x-api-key": "sk-ant-wrong"}, "invalid x-api-key"),
        ({"authorization": "Bearer sk-ant-wrong"}, "invalid x-api-key"),
    ],
    ids=["missing", "not-bearer", "wrong-x-api-key", "wrong-bearer"],
)
def test_missing_or_wrong_key_is_401(http: httpx2.Client, credentials: dict[str, str], message: str) -> None:
    response = http.post("/v1/messages", content=BODY, headers={**credentials, "anthropic-version": "2023-06-01"})
    assert assert_error_shape(response, 401, "authentication_error") == message


def test_wrong_key_through_the_sdk(keel_emulator: Emulator) -> None:
    sdk = client(keel_emulator, api_key="sk-ant-wrong", _strict_response_validation=True)
    with sdk, pytest.raises(anthropic.AuthenticationError) as info:
        sdk.messages.create(model="claude-opus-5", max_tokens=10, messages=USER)
    err = info.value
    assert (err.status_code, err.type, err.api_message) == (401, "authentication_error", "invalid x-api-key")
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id
    assert len(keel_emulator.access_log.entries()) == 1  # a 401 is never retried


# === bad input ===============================================================================================


@pytest.mark.parametrize("content", [b'{"model": "claude-opus-5",', b"{bad", b"", b"\xff\xfe{}"])
def test_malformed_json(http: httpx2.Client, content: bytes) -> None:
    response = http.post("/v1/messages", content=content, headers={**AUTH, "content-type": "application/json"})
    message = assert_error_shape(response, 400, "invalid_request_error")
    assert message.startswith("The request body is not valid JSON: ")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_content_type(http: httpx2.Client, content_type: str) -> None:
    response = http.post("/v1/messages", content=BODY, headers={**AUTH, "content-type": content_type})
    assert content_type in assert_error_shape(response, 400, "invalid_request_error")


def test_json_content_type_with_charset_accepted(http: httpx2.Client) -> None:
    response = http.post(
        "/v1/messages", content=BODY, headers={**AUTH, "content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_missing_anthropic_version(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", content=BODY, headers={"x-api-key": DEFAULT_API_KEY})
    assert assert_error_shape(response, 400, "invalid_request_error") == "anthropic-version: header is required"


@pytest.fixture
def small_emulator() -> Emulator:
    return Emulator(EmulatorConfig(max_body_bytes=1000))


def test_body_over_the_limit_is_413(small_emulator: Emulator) -> None:
    with client(small_emulator, _strict_response_validation=True) as sdk:
        create(sdk, "claude-opus-5", max_tokens=10, messages=[{"role": "user", "content": "word " * 100}])
        with pytest.raises(anthropic.ContentTooLargeError) as info:
            sdk.messages.create(
                model="claude-opus-5", max_tokens=10, messages=[{"role": "user", "content": "x" * 1000}]
            )
    err = info.value
    assert (err.status_code, err.type) == (413, "request_too_large")
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id
    assert [entry.status for entry in small_emulator.access_log.entries()] == [200, 413]  # a 413 is not retried


class _Receiver:
    """An ASGI `receive` that hands out a body in chunks and counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        if self.taken >= len(self.chunks):
            return {"type": "http.disconnect"}
        self.taken += 1
        return {"type": "http.request", "body": self.chunks[self.taken - 1], "more_body": self.taken < len(self.chunks)}


async def _asgi_post(app: Emulator, headers: dict[str, str], receive: _Receiver) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (k.encode(), v.encode()) for k, v in {**AUTH, "content-type": "application/json", **headers}.items()
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("emulator.test", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


async def test_declared_content_length_over_the_limit_is_refused_unread(small_emulator: Emulator) -> None:
    receive = _Receiver([b"x" * 500] * 40)  # 20,000 bytes; the header says so before any of it is read
    status, body = await _asgi_post(small_emulator, {"content-length": "20000"}, receive)
    assert status == 413
    assert body["error"]["type"] == "request_too_large"
    assert receive.taken == 0


async def test_undeclared_body_over_the_limit_stops_reading_at_the_limit(small_emulator: Emulator) -> None:
    receive = _Receiver([b"x" * 500] * 40)  # chunked: no content-length
    status, body = await _asgi_post(small_emulator, {}, receive)
    assert status == 413
    assert body["error"]["type"] == "request_too_large"
    assert receive.taken == 3  # 1,500 bytes read, then refused: not all 40 chunks


def test_unknown_path_is_404_with_the_error_shape(http: httpx2.Client) -> None:
    response = http.post("/v1/nonexistent", content=BODY, headers=AUTH)
    assert assert_error_shape(response, 404, "not_found_error") == "Not Found"
    response = http.get("/", headers=AUTH)
    assert_error_shape(response, 404, "not_found_error")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/messages", "POST"),
        ("PUT", "/v1/messages", "POST"),
        ("DELETE", "/v1/messages/count_tokens", "POST"),
        ("POST", "/v1/models", "GET"),
    ],
)
def test_wrong_method_gets_the_error_shape(http: httpx2.Client, method: str, path: str, allowed: str) -> None:
    response = http.request(method, path, headers=AUTH, content=BODY if method != "GET" else None)
    assert_error_shape(response, 405, "invalid_request_error")
    assert allowed in response.headers["allow"]


def test_wrong_method_through_the_sdk_raises_without_retrying(
    keel_anthropic: anthropic.Anthropic, keel_emulator: Emulator
) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        keel_anthropic.get("/v1/messages", cast_to=object)
    assert info.value.status_code == 405
    assert info.value.type == "invalid_request_error"
    assert len(keel_emulator.access_log.entries()) == 1
