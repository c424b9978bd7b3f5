"""The OpenAPI description of the emulator's own endpoints (`GET /openapi.json`), made from the request models it
validates with (`schema.py`) and the batch envelope rules (`batches.py`), so a fuzzer can aim at every endpoint.

It describes what the emulator accepts, not the whole real API: request bodies are the models' JSON Schemas, every
answer other than 200 is the API's error shape, and a 200's body is only said to be JSON (the response schemas are
checked against the API's own, in the tests).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from .batches import CUSTOM_ID_PATTERN, MAX_BATCH_REQUESTS
from .catalog import load_catalog
from .schema import CountTokensRequest, MessagesRequest
from .validation import SUPPORTED_VERSIONS

_REF = "#/components/schemas/{model}"
_ERROR_STATUSES = ("400", "401", "403", "404", "405", "413", "429", "500", "529")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string", "minLength": 1}},
            },
            "request_id": {"type": ["string", "null"]},
        },
    }


def _batch_create_schema() -> dict[str, Any]:
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["custom_id", "params"],
        "properties": {
            "custom_id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": CUSTOM_ID_PATTERN},
            "params": _ref("MessagesRequest"),
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["requests"],
        "properties": {"requests": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_REQUESTS, "items": item}},
    }


def _responses(media_type: str = "application/json") -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ref("ErrorResponse")}}}
    ok = {"description": "OK", "content": {media_type: {"schema": {}}}}
    return {
        "200": ok,
        **{status: {"description": "An error, in the API's shape", **error} for status in _ERROR_STATUSES},
    }


def _version_header() -> dict[str, Any]:
    versions = sorted(SUPPORTED_VERSIONS)
    return {
        "name": "anthropic-version",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": versions},
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _post(schema: str, summary: str) -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}
    return {"summary": summary, "parameters": [_version_header()], "requestBody": body, "responses": _responses()}


def _get(summary: str, *parameters: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {"summary": summary, "parameters": list(parameters), "responses": _responses(media_type)}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The emulator's endpoints as an OpenAPI 3.1 document (made once; do not modify it)."""
    _, definitions = models_json_schema(
        [(MessagesRequest, "validation"), (CountTokensRequest, "validation")], ref_template=_REF
    )
    models = sorted({name for spec in load_catalog().models for name in (spec.id, *spec.aliases)})
    for request in ("MessagesRequest", "CountTokensRequest"):  # any other model is a 404
        definitions["$defs"][request]["properties"]["model"] = {"type": "string", "enum": models}
    schemas = {
        **definitions["$defs"],
        "BatchCreateRequest": _batch_create_schema(),
        "ErrorResponse": _error_schema(),
    }
    page = (
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("before_id", {"type": "string"}),
        _query("after_id", {"type": "string"}),
    )
    batch = _path_param("batch_id")
    paths = {
        "/v1/messages": {"post": _post("MessagesRequest", "Create a message (JSON, or SSE with stream)")},
        "/v1/messages/count_tokens": {"post": _post("CountTokensRequest", "Count a request's input tokens")},
        "/v1/messages/batches": {
            "post": _post("BatchCreateRequest", "Create a Message Batch"),
            "get": _get("List Message Batches", *page),
        },
        "/v1/messages/batches/{batch_id}": {
            "get": _get("Get a Message Batch", batch),
            "delete": _get("Delete a Message Batch", batch),
        },
        "/v1/messages/batches/{batch_id}/cancel": {"post": _get("Cancel a Message Batch", batch)},
        "/v1/messages/batches/{batch_id}/results": {
            "get": _get("A Message Batch's results", batch, media_type="application/x-jsonl")
        },
        "/v1/models": {"get": _get("List models", *page)},
        "/v1/models/{model_id}": {"get": _get("Get a model", _path_param("model_id"))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "keel emulator", "version": "1", "description": __doc__.strip().splitlines()[0]},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
