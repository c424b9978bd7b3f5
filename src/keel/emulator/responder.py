"""The deterministic responder: the same request (and seed) always gives the same content.

How a request asks for an outcome: directives of the form `[[keel:NAME]]` or `[[keel:NAME=VALUE]]`
anywhere in the text of the last user message (see docs/emulator.md):

- `reply=TEXT`    answer exactly TEXT (useful with stop_sequences and max_tokens)
- `words=N`       answer with N generated tokens
- `tool=NAME`     call tool NAME (tools must be given); `tool` alone calls the first tool
- `refuse=CAT`    stop_reason refusal with stop_details.category CAT (cyber, bio, frontier_llm,
                  reasoning_extraction, general_harms, or `null`)
- `pause`         stop_reason pause_turn after a short text and a web_search server tool call; sending
                  that response back as the assistant turn continues it to end_turn
- `context-full`  stop_reason model_context_window_exceeded
- `empty`         an empty end_turn (no content, 3 output tokens)
- `think`         a thinking block even when thinking was not requested
- `stop=VALUE`    this stop_reason, whatever it is (to test how a client meets values newer than itself;
                  an SDK client with strict response validation rejects unknown values)

Without directives: if tools are given, tool_choice allows them and the conversation does not end with
tool results, the first tool whose name appears in the prompt (else the first tool) is called; otherwise
a text answer of 12 to 40 generated tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from jiter import from_json
from pydantic_core import to_json

from .tokens import count_json, count_text, split_tokens
from .validation import ValidRequest

DIRECTIVE_RE = re.compile(r"\[\[keel:([a-z-]+)(?:=([^\]]*))?\]\]")
CONTINUE_PROMPT = "Continue from where you left off."
INTERRUPTED_RE = re.compile(
    r"Your previous response was interrupted and ended with (?P<partial>.*)\. " + re.escape(CONTINUE_PROMPT), re.S
)
PAUSED = "\x00paused"  # the "partial text" of a resumed pause_turn: the answer goes on, it is not a prefix
REFUSAL_CATEGORIES = ("cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms")
REFUSAL_EXPLANATION = "This request was declined because it could enable {category} harm."
EMPTY_END_TURN_TOKENS = 3
HIDDEN_THINKING_TOKENS = 24
VOCABULARY = (
    "the",
    "keel",
    "emulator",
    "answers",
    "with",
    "deterministic",
    "text",
    "so",
    "that",
    "tests",
    "can",
    "rely",
    "on",
    "every",
    "token",
    "while",
    "the",
    "request",
    "flows",
    "through",
    "the",
    "official",
    "SDK",
    "unchanged",
    "and",
    "each",
    "response",
    "carries",
    "its",
    "request",
    "id",
    "usage",
    "and",
    "stop",
    "reason",
    "ready",
    "for",
    "logging",
    "retries",
    "streaming",
    "batches",
    "and",
    "cost",
    "reports",
)


@dataclass
class Block:
    """One content block as the response will carry it, with its pieces for streaming deltas."""

    kind: str  # text / thinking / tool_use / server_tool_use
    pieces: list[str]
    tool_id: str = ""
    tool_name: str = ""
    signature: str = ""
    tokens: int = 0
    complete: bool = True  # False for a tool call cut by max_tokens: the real stream never closes that block

    def to_json(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == "text":
            return {"type": "text", "text": text, "citations": None}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": text, "signature": self.signature}
        if self.kind == "server_tool_use":
            return {
                "type": "server_tool_use",
                "id": self.tool_id,
                "name": self.tool_name,
                "caller": {"type": "direct"},
                "input": json.loads(text),
            }
        return {
            "type": "tool_use",
            "id": self.tool_id,
            "name": self.tool_name,
            "input": from_json(text.encode(), partial_mode=True) if text else {},
            "caller": {"type": "direct"},
        }


@dataclass
class Generation:
    blocks: list[Block] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    output_tokens: int = 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


def directives(request: ValidRequest) -> dict[str, str]:
    """Directives in the last user message (the most recent instruction wins)."""
    users = [m for m in request.body["messages"] if m["role"] == "user"]
    text = _text_of(users[-1]["content"]) if users else ""
    return {name: value or "" for name, value in DIRECTIVE_RE.findall(text)}


def _rng(request: ValidRequest, seed: int) -> random.Random:
    body = request.body
    material = to_json([seed, request.model.id, body.get("system"), body["messages"], body.get("tools")])
    return random.Random(hashlib.blake2b(material, digest_size=8).digest())


def _words(rng: random.Random, count: int) -> str:
    """A sentence of exactly `count` tokens: count - 1 words and a full stop (one word for count 1)."""
    words = rng.choices(VOCABULARY, k=max(1, count - 1))
    sentence = " ".join(words)
    return sentence[:1].upper() + sentence[1:] + "." if count > 1 else sentence


def _schema_value(schema: dict[str, Any], hint: str, depth: int = 0) -> Any:
    """A value valid against a JSON schema (the common subset tools use)."""
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(props))
        if depth > 4:
            return {}
        return {name: _schema_value(props.get(name, {}), name, depth + 1) for name in required if name in props}
    if kind == "array":
        items = schema.get("items", {"type": "string"})
        return [_schema_value(items, hint, depth + 1) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return float(max(1, schema.get("minimum", 1)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"example {hint}"


def _pick_tool(request: ValidRequest, wanted: str | None) -> dict[str, Any] | None:
    tools: list[dict[str, Any]] = [t for t in request.body.get("tools") or [] if "input_schema" in t]
    if not tools:
        return None
    choice = request.body.get("tool_choice") or {"type": "auto"}
    if choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        wanted = choice["name"]
    if wanted:
        return next((t for t in tools if t["name"] == wanted), tools[0])
    prompt = _text_of(request.body["messages"][-1]["content"])
    return next((t for t in tools if t["name"] in prompt), tools[0])


def _wants_tool(request: ValidRequest, found: dict[str, str]) -> bool:
    if "tool" in found:
        return True
    choice = (request.body.get("tool_choice") or {"type": "auto"})["type"]
    if choice in ("any", "tool"):
        return True
    last = request.body["messages"][-1]
    ends_with_results = isinstance(last["content"], list) and any(
        block["type"] == "tool_result" for block in last["content"]
    )
    return choice == "auto" and not ends_with_results and last["role"] == "user"


def _json_pieces(text: str, size: int = 12) -> list[str]:
    return [""] + [text[i : i + size] for i in range(0, len(text), size)]


def _limit(tokens: list[str], budget: int) -> tuple[list[str], bool]:
    return (tokens[:budget], True) if len(tokens) > budget else (tokens, False)


def is_paused_turn(message: dict[str, Any]) -> bool:
    """An assistant turn ending in a server tool call: a pause_turn response sent back to be continued."""
    content = message["content"]
    return message["role"] == "assistant" and isinstance(content, list) and content[-1]["type"] == "server_tool_use"


def _continuation(request: ValidRequest) -> tuple[ValidRequest, str | None]:
    """The request a continuation continues, and the text already received; `(request, None)` otherwise.

    Three forms are recognised, as keel (and the docs) send them: an assistant prefill (4.5 and older);
    a user message "Your previous response was interrupted and ended with …" (4.6 and later); and the
    partial answer as an assistant turn followed by a user "Continue from where you left off."
    """
    messages = request.body["messages"]
    last = messages[-1]
    if is_paused_turn(last):
        return replace(request, body={**request.body, "messages": messages[:-1]}), PAUSED
    if last["role"] == "assistant" and len(messages) > 1:
        original, partial = messages[:-1], _text_of(last["content"])
    elif last["role"] == "user" and (match := INTERRUPTED_RE.fullmatch(_text_of(last["content"]))):
        original, partial = messages[:-1], match["partial"]
    elif (
        last["role"] == "user"
        and _text_of(last["content"]).strip() == CONTINUE_PROMPT
        and len(messages) > 2
        and messages[-2]["role"] == "assistant"
    ):
        original, partial = messages[:-2], _text_of(messages[-2]["content"])
    else:
        return request, None
    return replace(request, body={**request.body, "messages": original}), partial


def _plan(request: ValidRequest, found: dict[str, str], rng: random.Random) -> tuple[str, dict[str, Any] | None]:
    """The whole text the request's answer would have, and the tool it would call, before any limit."""
    tool = _pick_tool(request, found.get("tool")) if _wants_tool(request, found) else None
    forced = (request.body.get("tool_choice") or {}).get("type") in ("any", "tool")
    if "reply" in found:
        return found["reply"], tool
    if tool is not None:
        return ("" if forced else f"I'll use the {tool['name']} tool for this."), tool
    if "words" in found and found["words"].isdigit():
        return _words(rng, int(found["words"])), None
    if "pause" in found:
        return _words(rng, 8), None
    return _words(rng, rng.randint(12, 40)), None


def generate(request: ValidRequest, seed: int, make_id: Callable[[str], str]) -> Generation:
    """The response content for a validated request; `make_id(prefix)` names tool calls."""
    base, partial = _continuation(request)
    found = directives(base)
    body = request.body
    rng = _rng(base, seed)
    gen = Generation()
    if "refuse" in found:
        category = found["refuse"] if found["refuse"] in REFUSAL_CATEGORIES else None
        gen.stop_reason = "refusal"
        gen.stop_details = {
            "type": "refusal",
            "category": category,
            "explanation": REFUSAL_EXPLANATION.format(category=category.replace("_", " ")) if category else None,
        }
        return gen
    if "empty" in found:
        gen.output_tokens = EMPTY_END_TURN_TOKENS
        return gen

    text, tool = _plan(base, found, rng)
    if partial is PAUSED:
        found.pop("pause", None)
        text, tool = _words(random.Random(rng.random()), 10), None
    elif partial is not None:
        text = text[len(partial) :] if partial and text.startswith(partial) else text

    budget = body["max_tokens"]
    context_left = request.model.context_window - request.input_tokens
    context_bound = context_left < budget or "context-full" in found
    if "context-full" in found:
        context_left = min(context_left, budget - 1, 8)
    budget = min(budget, context_left)
    truncation = "model_context_window_exceeded" if context_bound else "max_tokens"

    if request.thinking_requested or "think" in found:
        thought = _words(random.Random(rng.random()), 16)
        omitted = request.display == "omitted"
        thinking_tokens = HIDDEN_THINKING_TOKENS if omitted else count_text(thought)
        pieces = [] if omitted else split_tokens(thought)
        signature = "sig_" + hashlib.blake2b(thought.encode(), digest_size=24).hexdigest()
        gen.blocks.append(Block("thinking", pieces, signature=signature, tokens=thinking_tokens))
        gen.output_tokens += min(thinking_tokens, budget)
        if thinking_tokens >= budget:
            gen.stop_reason = truncation
            return gen
        budget -= thinking_tokens

    for sequence in body.get("stop_sequences") or ():
        at = text.find(sequence)
        if sequence and at >= 0 and (gen.stop_sequence is None or at < text.find(gen.stop_sequence)):
            gen.stop_sequence = sequence
    if gen.stop_sequence is not None:
        text = text[: text.find(gen.stop_sequence)]
        tool = None
        gen.stop_reason = "stop_sequence"

    if text:
        tokens, cut = _limit(split_tokens(text), budget)
        gen.blocks.append(Block("text", tokens, tokens=len(tokens)))
        gen.output_tokens += len(tokens)
        budget -= len(tokens)
        if cut:
            gen.stop_reason, gen.stop_sequence = truncation, None
            return gen

    if tool is not None:
        arguments = json.dumps(_schema_value(tool["input_schema"], tool["name"]))
        cost = count_text(tool["name"]) + count_json(json.loads(arguments))
        block = Block("tool_use", _json_pieces(arguments), tool_id=make_id("toolu_01"), tool_name=tool["name"])
        gen.blocks.append(block)
        if cost > budget:
            # Cut mid-input like the real API: the partial JSON streams, the block's input is what parses.
            block.pieces = _json_pieces(arguments[: len(arguments) * budget // cost])
            block.tokens = budget
            block.complete = False
            gen.output_tokens += budget
            gen.stop_reason = truncation
            return gen
        block.tokens = cost
        gen.output_tokens += cost
        gen.stop_reason = "tool_use"
    elif "pause" in found and gen.stop_reason == "end_turn":
        query = json.dumps({"query": _words(rng, 4).rstrip(".")})
        gen.blocks.append(
            Block("server_tool_use", _json_pieces(query), tool_id=make_id("srvtoolu_01"), tool_name="web_search")
        )
        gen.output_tokens += count_text(query)
        gen.stop_reason = "pause_turn"
    elif "context-full" in found and gen.stop_reason == "end_turn":
        gen.stop_reason = "model_context_window_exceeded"
    if found.get("stop"):
        gen.stop_reason = found["stop"]
    return gen
