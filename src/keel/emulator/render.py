"""Turn a `Generation` into the API's wire forms: one Message JSON, or the SSE event sequence."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from json.encoder import encode_basestring
from typing import Any

from .prompt_cache import InputUsage
from .responder import Block, Generation

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # byte % 62: a slight bias, harmless
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def new_id(prefix: str, length: int = 22) -> str:
    """An id in the API's style (`req_011C…`, `msg_01…`, `toolu_01…`): prefix + base62 (one urandom call)."""
    return prefix + "".join(_ALPHABET[byte % 62] for byte in os.urandom(length))


def usage(prompt: InputUsage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt.input_tokens,
        "cache_creation_input_tokens": prompt.cache_creation,
        "cache_read_input_tokens": prompt.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.cache_write_5m,
            "ephemeral_1h_input_tokens": prompt.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(message_id: str, model: str, gen: Generation, prompt: InputUsage) -> dict[str, Any]:
    return {
        "model": model,
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [block.to_json() for block in gen.blocks],
        "stop_reason": gen.stop_reason,
        "stop_sequence": gen.stop_sequence,
        "stop_details": gen.stop_details,
        "usage": usage(prompt, gen.output_tokens),
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
    if block.kind == "server_tool_use":
        return {"type": "server_tool_use", "id": block.tool_id, "name": block.tool_name, "input": {}}
    return {
        "type": "tool_use",
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


def sse_events(message_id: str, model: str, gen: Generation, prompt: InputUsage) -> Iterator[tuple[bytes, bool]]:
    """The SSE events in the real order, each with whether it carries generated content (for pacing)."""
    start = message_json(message_id, model, gen, prompt)
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=usage(prompt, 1))
    del start["stop_details"]
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
    yield (
        event(
            "message_delta", {"type": "message_delta", "delta": final, "usage": {"output_tokens": gen.output_tokens}}
        ),
        False,
    )
    yield event("message_stop", {"type": "message_stop"}), False
