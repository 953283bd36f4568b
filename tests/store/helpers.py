"""Builders shared by the store tests."""

from __future__ import annotations

import uuid
from typing import Any

from stream_mw._store import StoredResponse


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def stored(response_id: str | None = None, text: str = "hello", **fields: Any) -> StoredResponse:
    """A StoredResponse with one user message in and one assistant message out."""
    response_id = response_id or new_response_id()
    return StoredResponse(
        response=make_response(response_id, text, **fields),
        input_items=[
            {
                "type": "message",
                "id": f"msg_in_{response_id}",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
                "status": "completed",
            }
        ],
    )


def make_response(response_id: str, text: str = "hello", **fields: Any) -> dict[str, Any]:
    """A complete Response object, as the converter produces it (strict-SDK valid)."""
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000,
        "completed_at": 1_700_000_001,
        "status": "completed",
        "incomplete_details": None,
        "model": "test-model",
        "previous_response_id": None,
        "instructions": None,
        "output": [
            {
                "type": "message",
                "id": "msg_" + response_id.removeprefix("resp_"),
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "error": None,
        "tools": [],
        "tool_choice": "auto",
        "truncation": "disabled",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": 1.0,
        "reasoning": {"effort": None, "summary": None},
        "user": None,
        "usage": {
            "input_tokens": 3,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 4,
        },
        "max_output_tokens": None,
        "max_tool_calls": None,
        "store": True,
        "background": False,
        "service_tier": "auto",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }
    response.update(fields)
    return response
