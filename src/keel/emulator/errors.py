"""Anthropic-shaped error bodies: one exception type carries status, error.type, message and headers."""

from __future__ import annotations

from typing import Any

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "conflict_error": "The request conflicts with the current state of the resource.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your per-minute rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out.",
    "overloaded_error": "Overloaded",
}

SPEND_LIMIT_MESSAGES: dict[str, str] = {
    "enforced_spend_limit_reached": "You have reached your organization's monthly spend limit. "
    "Your access will be restored on the 1st of next month at 00:00 UTC.",
    "contract_spend_limit_reached": "You have reached the spend limit of your contract.",
}


def error_type_for(status: int) -> str:
    """The error.type the real API uses for a status (unknown 5xx are api_error, unknown 4xx invalid requests)."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class ApiError(Exception):
    """An error response the emulator sends: raised anywhere in request handling."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type or error_type_for(status)
        self.error_code = error_code
        self.message = (
            message or SPEND_LIMIT_MESSAGES.get(error_code or "") or DEFAULT_MESSAGES.get(self.error_type, "Error")
        )
        self.headers = headers or {}
        super().__init__(f"{status} {self.error_type}: {self.message}")

    def error_object(self) -> dict[str, Any]:
        """The inner `error` object (also used for mid-stream errors and errored batch results)."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return error

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {"type": "error", "error": self.error_object(), "request_id": request_id}


def invalid(message: str) -> ApiError:
    return ApiError(400, message)
