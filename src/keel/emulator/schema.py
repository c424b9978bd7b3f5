"""Pydantic models of a Messages request.

The real API validates with pydantic too, so its 400 messages read `messages.0.content.0.text.text: Field
required` or `foo: Extra inputs are not permitted`; validating with the same library gives the same words.
Union branches are tagged (`str`/`list`, block `type`) and `first_error` drops the `str`/`list` tags so a
location reads exactly like the API's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Loose(BaseModel):
    """Blocks keel does not generate: only their `type` is checked, the rest passes through."""

    model_config = ConfigDict(extra="allow")


class CacheControl(Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class ImageBlock(Strict):
    type: Literal["image"]
    source: dict[str, Any]
    cache_control: CacheControl | None = None
    transformations: dict[str, Any] | None = None


class DocumentBlock(Strict):
    type: Literal["document"]
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    caller: dict[str, Any] | None = None
    cache_control: CacheControl | None = None
    toolset_name: str | None = None


class SearchResultBlock(Loose):
    type: Literal["search_result"]


class ToolReferenceBlock(Loose):
    type: Literal["tool_reference"]


class BrowserStateBlock(Loose):
    type: Literal["browser_state"]


# Member order is the API's (its OpenAPI `oneOf`): pydantic lists the expected tags in this order.
ToolResultInner = Annotated[
    TextBlock | ImageBlock | SearchResultBlock | DocumentBlock | ToolReferenceBlock | BrowserStateBlock,
    Field(discriminator="type"),
]


def _str_or_list(value: Any) -> str:
    return "str" if isinstance(value, str) else "list"


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        Annotated[
            Annotated[str, Tag("str")] | Annotated[list[ToolResultInner], Tag("list")],
            Discriminator(_str_or_list),
        ]
        | None
    ) = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None
    toolset_name: str | None = None


class ThinkingBlock(Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Strict):
    type: Literal["redacted_thinking"]
    data: str


class ServerToolUseBlock(Loose):
    type: Literal["server_tool_use"]


class WebSearchToolResultBlock(Loose):
    type: Literal["web_search_tool_result"]


class WebFetchToolResultBlock(Loose):
    type: Literal["web_fetch_tool_result"]


class CodeExecutionToolResultBlock(Loose):
    type: Literal["code_execution_tool_result"]


class BashCodeExecutionToolResultBlock(Loose):
    type: Literal["bash_code_execution_tool_result"]


class TextEditorCodeExecutionToolResultBlock(Loose):
    type: Literal["text_editor_code_execution_tool_result"]


class ToolSearchToolResultBlock(Loose):
    type: Literal["tool_search_tool_result"]


class ContainerUploadBlock(Loose):
    type: Literal["container_upload"]


class MidConvSystemBlock(Loose):
    type: Literal["mid_conv_system"]


# Every block type the API accepts in a message, in the order of its OpenAPI `InputContentBlock.oneOf`, so an
# unknown `type` lists the expected tags in the API's order.
ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolUseBlock
    | ToolResultBlock
    | ServerToolUseBlock
    | WebSearchToolResultBlock
    | WebFetchToolResultBlock
    | CodeExecutionToolResultBlock
    | BashCodeExecutionToolResultBlock
    | TextEditorCodeExecutionToolResultBlock
    | ToolSearchToolResultBlock
    | ContainerUploadBlock
    | MidConvSystemBlock,
    Field(discriminator="type"),
]


class MessageParam(Strict):
    # `system` is a mid-conversation system message; which models accept it is a per-model rule (validation.py).
    role: Literal["user", "assistant", "system"]
    content: Annotated[
        Annotated[str, Tag("str")] | Annotated[list[ContentBlock], Tag("list")],
        Discriminator(_str_or_list),
    ]


class Tool(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None


class ServerTool(Loose):
    """Anthropic-defined tools (`web_search_20250305`, `bash_…`): identified by a versioned `type`."""

    type: str = Field(pattern=r"^[a-z_]+_\d{8}$")
    name: str


def _tool_kind(value: Any) -> str:
    if isinstance(value, dict) and value.get("type") not in (None, "custom"):
        return "server"
    return "custom"


AnyTool = Annotated[Annotated[Tool, Tag("custom")] | Annotated[ServerTool, Tag("server")], Discriminator(_tool_kind)]


class ToolChoiceAuto(Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Strict):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingEnabled(Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(Strict):
    type: Literal["disabled"]


class ThinkingBetweenTools(Strict):
    type: Literal["between_tools"]


Thinking = Annotated[
    ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled | ThinkingBetweenTools, Field(discriminator="type")
]


class OutputConfig(Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: dict[str, Any] | None = None


class Metadata(Strict):
    user_id: str | None = None


class Container(Strict):
    id: str | None = None
    skills: list[dict[str, Any]] | None = None


class Diagnostics(Strict):
    previous_message_id: str | None = None


SystemParam = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[TextBlock], Tag("list")],
    Discriminator(_str_or_list),
]


class CountTokensRequest(Strict):
    model: str
    messages: list[MessageParam]
    system: SystemParam | None = None
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = None  # automatic caching: a breakpoint on the last cacheable block
    speed: Literal["standard", "fast"] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=0)  # 0 pre-warms the prompt cache without generating
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | Container | None = None
    diagnostics: Diagnostics | None = None
    inference_geo: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)


SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
_BRANCH_TAGS = {"str", "list", "custom", "server"}


def first_error(error: ValidationError) -> str:
    """The API's one-line message for the first validation error: `loc.path: message`."""
    detail = error.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in detail["loc"] if part not in _BRANCH_TAGS)
    message = detail["msg"]
    if detail["type"] == "union_tag_invalid" and detail.get("ctx"):
        ctx = detail["ctx"]
        expected = ctx["expected_tags"]
        message = f"Input tag '{ctx['tag']}' found using 'type' does not match any of the expected tags: {expected}"
    return f"{loc}: {message}" if loc else message
