"""Turn a `Generation` into the API's wire forms: one Message JSON, or the SSE event sequence."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from json.encoder import encode_basestring
from typing import Any

from .prompt_cache import InputUsage
from .responder import Block, Generation
from .validation import ValidRequest

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # byte % 62: a slight bias, harmless
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def new_id(prefix: str, length: int = 22) -> str:
    """An id in the API's style (`req_011C…`, `msg_01…`, `toolu_01…`): prefix + base62 (one urandom call)."""
    return prefix + "".join(_ALPHABET[byte % 62] for byte in os.urandom(length))


def inference_geo(request: ValidRequest) -> str | None:
    """Where inference ran, as `usage.inference_geo` reports it: the requested geo (default `global`) on the models
    that take the parameter, None on the older ones."""
    return (request.body.get("inference_geo") or "global") if request.model.inference_geo else None


def usage(request: ValidRequest, prompt: InputUsage, gen: Generation | None, output_tokens: int) -> dict[str, Any]:
    """The `usage` object. Without `gen` (a stream's `message_start`: nothing generated yet) the breakdowns of the
    output are null; with it, `output_tokens_details` counts the thinking tokens and `server_tool_use` the server tool
    calls, each null when there are none."""
    thinking = sum(block.tokens for block in gen.blocks if block.kind == "thinking") if gen else 0
    searches = (
        sum(block.tool_name == "web_search" for block in gen.blocks if block.kind == "server_tool_use") if gen else 0
    )
    return {
        "input_tokens": prompt.input_tokens,
        "cache_creation_input_tokens": prompt.cache_creation,
        "cache_read_input_tokens": prompt.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.cache_write_5m,
            "ephemeral_1h_input_tokens": prompt.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"thinking_tokens": min(thinking, output_tokens)} if thinking else None,
        "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0} if searches else None,
        "service_tier": "standard",
        "inference_geo": inference_geo(request),
    }


def message_json(message_id: str, request: ValidRequest, gen: Generation, prompt: InputUsage) -> dict[str, Any]:
    return {
        "model": request.model.id,
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [block.to_json() for block in gen.blocks],
        "stop_reason": gen.stop_reason,
        "stop_sequence": gen.stop_sequence,
        "stop_details": gen.stop_details,
        "usage": usage(request, prompt, gen, gen.output_tokens),
        "container": None,
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _delta_event(index: int, kind: str, field: str, value: str) -> bytes:
    """A content_block_delta, formatted directly: the hot path of a long stream (same bytes as `event`)."""
    return (
        f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":{index},'
        f'"delta":{{"type":"{kind}","{field}":{encode_basestring(value)}}}}}\n\n'
    ).encode()


def _block_start(block: Block) -> dict[str, Any]:
    if block.kind == "text":
        return {"type": "text", "text": ""}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {  # tool_use or server_tool_use
        "type": block.kind,
        "id": block.tool_id,
        "name": block.tool_name,
        "caller": {"type": "direct"},
        "input": {},
    }


def _deltas(block: Block, index: int) -> Iterator[bytes]:
    if block.kind == "text":
        for piece in block.pieces:
            yield _delta_event(index, "text_delta", "text", piece)
    elif block.kind == "thinking":
        for piece in block.pieces:
            yield _delta_event(index, "thinking_delta", "thinking", piece)
        yield _delta_event(index, "signature_delta", "signature", block.signature)
    else:
        for piece in block.pieces:
            yield _delta_event(index, "input_json_delta", "partial_json", piece)


def sse_events(
    message_id: str, request: ValidRequest, gen: Generation, prompt: InputUsage
) -> Iterator[tuple[bytes, bool]]:
    """The SSE events in the real order, each with whether it carries generated content (for pacing).

    `message_start` carries the message's keys as the recordings show them: no `stop_details`, no `container`."""
    start = message_json(message_id, request, gen, prompt)
    final_usage = start["usage"]
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=usage(request, prompt, None, 1))
    del start["stop_details"], start["container"]
    yield event("message_start", {"type": "message_start", "message": start}), False
    for index, block in enumerate(gen.blocks):
        yield (
            event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _block_start(block)},
            ),
            False,
        )
        if index == 0:
            yield PING, False
        for delta in _deltas(block, index):
            yield delta, True
        if block.complete:
            yield event("content_block_stop", {"type": "content_block_stop", "index": index}), False
    final: dict[str, Any] = {"stop_reason": gen.stop_reason, "stop_sequence": gen.stop_sequence}
    if gen.stop_details is not None:
        final["stop_details"] = gen.stop_details
    # the cumulative output_tokens, and the output breakdowns when there is one (the SDK takes them from here)
    delta_usage = {"output_tokens": gen.output_tokens}
    delta_usage.update(
        (name, final_usage[name]) for name in ("output_tokens_details", "server_tool_use") if final_usage[name]
    )
    yield event("message_delta", {"type": "message_delta", "delta": final, "usage": delta_usage}), False
    yield event("message_stop", {"type": "message_stop"}), False
