"""Content parts of replayed messages and tool outputs → Chat Completions content.

Each function takes content already checked by ``_request_validation``. User and system
content keeps its images, files and audio as Chat parts, and becomes a plain string when it is
all text, the one content shape every Chat backend accepts; assistant content becomes text
(and a refusal); a tool output becomes text only, as Chat tool messages carry nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._errors import InvalidRequestError
from ._observe import logger
from ._request_validation import _TEXT_PARTS

_PART_SEPARATOR: Final = "\n\n"


def _user_content(content: str | Sequence[Mapping[str, Any]], path: str) -> Any:
    if isinstance(content, str):
        return content
    parts = [_content_part(part, f"{path}.content[{index}]") for index, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        # A plain string is the one content shape every Chat backend accepts.
        return _PART_SEPARATOR.join(part["text"] for part in parts)
    return parts


def _content_part(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None:
            raise InvalidRequestError(
                "input_image with only a file_id is not supported: Chat Completions backends "
                "have no Files API. Send the image as image_url (an https: or data: URL).",
                param=f"{path}.file_id",
            )
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            image["detail"] = "high" if detail == "original" else detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any]
        if part.get("file_data") is not None:
            file = {"file_data": part["file_data"]}
            if part.get("filename") is not None:
                file["filename"] = part["filename"]
        elif part.get("file_id") is not None:
            file = {"file_id": part["file_id"]}
        else:
            raise InvalidRequestError(
                "input_file with a file_url is not supported: Chat Completions accepts files "
                "only inline. Send the file as file_data (base64) with a filename.",
                param=f"{path}.file_url",
            )
        return {"type": "file", "file": file}
    audio = part["input_audio"]
    return {
        "type": "input_audio",
        "input_audio": {"data": audio["data"], "format": audio["format"]},
    }


def _assistant_content(content: str | Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    if isinstance(content, str):
        return content, None
    # Parts of one assistant message are fragments of one reply: join them without a gap.
    text = "".join(part["text"] for part in content if part["type"] in _TEXT_PARTS)
    refusal = "".join(part["refusal"] for part in content if part["type"] == "refusal")
    if not refusal:
        return text, None
    # Keep what the model said visible to backends that ignore the refusal field.
    return text or refusal, refusal


def _tool_output_text(output: str | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    pieces = []
    for part in output:
        kind = part["type"]
        if kind in _TEXT_PARTS:
            pieces.append(part["text"])
        elif kind == "input_image":
            pieces.append("[image omitted: Chat Completions tool messages carry text only]")
        else:
            name = part.get("filename") or "file"
            pieces.append(f"[{name} omitted: Chat Completions tool messages carry text only]")
    if len(pieces) < len(output):
        logger.debug("Non-text parts of a tool output were replaced by a note")
    return _PART_SEPARATOR.join(pieces)
