"""The emulator's model catalog: one JSON data file drives per-model validation and `/v1/models`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class EffortLimit:
    """Effort levels allowed together with one thinking type (e.g. `disabled` only up to `high`)."""

    levels: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class ModelSpec:
    id: str
    display_name: str
    created_at: str
    aliases: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    max_output_tokens_batch: int | None
    default_thinking: str
    thinking_rejected: dict[str, str]
    effort_limits: dict[str, EffortLimit]
    display_default: str
    effort_levels: tuple[str, ...] | None
    effort_default: str | None
    forced_tool_choice: bool
    prefill: bool
    system_messages: bool  # accepts mid-conversation `role: "system"` messages
    sampling: str  # "rejected": non-default values are a 400; "exclusive": temperature + top_p is a 400
    rate_limit_class: str  # models of one class (family: opus, sonnet, ...) share rate-limit buckets
    min_cache_tokens: int  # the minimum cacheable prompt length: a shorter prefix is not cached
    inference_geo: bool  # takes `inference_geo` and reports where inference ran in `usage.inference_geo`


def _spec(raw: dict[str, Any]) -> ModelSpec:
    thinking = raw["thinking"]
    effort = raw["effort"]
    return ModelSpec(
        id=raw["id"],
        display_name=raw["display_name"],
        created_at=raw["created_at"],
        aliases=tuple(raw["aliases"]),
        context_window=raw["context_window"],
        max_output_tokens=raw["max_output_tokens"],
        max_output_tokens_batch=raw["max_output_tokens_batch"],
        default_thinking=thinking["default"],
        thinking_rejected=dict(thinking["rejected"]),
        effort_limits={
            kind: EffortLimit(tuple(v["levels"]), v["message"]) for kind, v in thinking["effort_limits"].items()
        },
        display_default=thinking["display_default"],
        effort_levels=None if effort is None else tuple(effort["levels"]),
        effort_default=None if effort is None else effort["default"],
        forced_tool_choice=raw["forced_tool_choice"],
        prefill=raw["prefill"],
        system_messages=raw["system_messages"],
        sampling=raw["sampling"],
        rate_limit_class=raw["rate_limit_class"],
        min_cache_tokens=raw["min_cache_tokens"],
        inference_geo=raw["inference_geo"],
    )


EFFORT_LEVELS = ("low", "medium", "high", "max", "xhigh")
THINKING_TYPES = ("adaptive", "between_tools", "disabled", "enabled")


def _support(supported: bool) -> dict[str, bool]:
    return {"supported": supported}


def capabilities(spec: ModelSpec) -> dict[str, Any]:
    """`ModelInfo.capabilities`: thinking types and effort levels from the catalog; the rest (batch, citations,
    code execution, image and PDF input, structured outputs, context management, server tools) is reported
    supported on every model, as the docs list it for every current model (see docs/emulator.md)."""
    levels = spec.effort_levels or ()
    return {
        "batch": _support(True),
        "citations": _support(True),
        "code_execution": _support(True),
        "context_management": {
            "supported": True,
            "clear_thinking_20251015": _support(True),
            "clear_tool_uses_20250919": _support(True),
            "compact_20260112": _support(True),
        },
        "effort": {"supported": bool(levels), **{level: _support(level in levels) for level in EFFORT_LEVELS}},
        "image_input": _support(True),
        "pdf_input": _support(True),
        "server_tools": {"supported": True, "code_execution": _support(True), "web_search": _support(True)},
        "structured_outputs": _support(True),
        "thinking": {
            "supported": True,
            "types": {kind: _support(kind not in spec.thinking_rejected) for kind in THINKING_TYPES},
        },
    }


@dataclass(frozen=True)
class Catalog:
    models: tuple[ModelSpec, ...]  # newest first, as `/v1/models` lists them
    by_name: dict[str, ModelSpec]

    def resolve(self, name: str) -> ModelSpec | None:
        """The model for an id or alias; None when unknown."""
        return self.by_name.get(name)


@cache
def load_catalog() -> Catalog:
    text = resources.files("keel.emulator").joinpath("data/models.json").read_text(encoding="utf-8")
    specs = (_spec(raw) for raw in json.loads(text)["models"])
    models = tuple(sorted(specs, key=lambda spec: spec.created_at, reverse=True))
    by_name: dict[str, ModelSpec] = {}
    for spec in models:
        by_name[spec.id] = spec
        for alias in spec.aliases:
            by_name[alias] = spec
    return Catalog(models=models, by_name=by_name)
