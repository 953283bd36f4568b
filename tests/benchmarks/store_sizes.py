"""How large a stored response gets in a long Codex session: the basis of the
``store_max_response_bytes`` default.

Run: ``.venv/bin/python tests/benchmarks/store_sizes.py``

A stored response holds the whole input the model saw plus its output. Codex sends the whole
history every turn (``store: false`` by default; with ``store: true``, as for Azure-style
providers, every turn is stored, and a ``previous_response_id`` chain stores the same
history), so the largest stored response is the last turn before Codex compacts its history.
Codex compacts when the history nears the model's context window, so the bound is a context
window of history, in bytes.

The session is built from the real Codex 0.169 request in ``tests/fixtures/requests``
(instructions, tools, item shapes) plus heavy agent turns: a user message, then tool calls
each with reasoning and a shell output of up to 10 KiB (Codex cuts longer outputs down before
they reach the model), then an answer. Tokens are estimated at 4 bytes of text per token
(o200k on English and code; denser text such as logs gives fewer bytes per token and so
smaller bodies), images at 1,105 tokens each (a 1536x1024 screenshot at high detail) with
1.5 MB of base64 PNG. The size is ``StoredResponse.encode()`` of the normalised items: exactly
what the stores keep and the limit counts.

What it printed (deterministic: a computation, not a timing):

| context window | session | turns before compaction | largest stored response |
|---|---|---|---|
| 272,000 | 8 calls/turn, 2 KiB outputs | 35 | 1.1 MiB |
| 272,000 | 8 calls/turn, 10 KiB outputs | 10 | 1.0 MiB |
| 272,000 | as above + 10 screenshots | 9 | 15.2 MiB |
| 272,000 | as above + 40 screenshots | 8 | 58.0 MiB |
| 1,000,000 | 8 calls/turn, 2 KiB outputs | 129 | 3.9 MiB |
| 1,000,000 | 8 calls/turn, 10 KiB outputs | 38 | 3.6 MiB |
| 1,000,000 | as above + 10 screenshots | 38 | 17.9 MiB |
| 1,000,000 | as above + 40 screenshots | 36 | 60.6 MiB |

Text alone stays under 4 MiB even with a 1M-token window; images decide. The old 16 MiB
default refused a session with about ten screenshots. A full-history client cannot send more
than ``max_request_bytes`` (32 MiB), so ``store_max_response_bytes`` defaults to twice that:
every accepted request is storable, and a ``previous_response_id`` chain (which is not bound
by the request limit) gets as much again to grow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream_mw._store import StoredResponse  # noqa: E402
from stream_mw._store_gateway import normalize_input  # noqa: E402
from tests.store.helpers import make_response  # noqa: E402

BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1_105
IMAGE_BYTES = 1_500_000
#: Codex compacts the history at about 90 % of the window.
COMPACT_AT = 0.9
MiB = 1024 * 1024


def _turn(n: int, calls: int, output_bytes: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": f"Step {n}: run the tests, read the failures, fix them. " * 4}
    ]
    for c in range(calls):
        call_id = f"call_{n}_{c}"
        items += [
            {"type": "reasoning", "summary": [{"type": "summary_text",
             "text": "Looking at the failing assertion and the code under test. " * 20}]},
            {"type": "function_call", "call_id": call_id, "name": "exec_command",
             "arguments": orjson.dumps({"cmd": f"pytest -x tests/test_{n}_{c}.py -q",
                                        "workdir": "/work/project"}).decode()},
            {"type": "function_call_output", "call_id": call_id,
             "output": ("E   assert result == expected\n" * 400)[:output_bytes]},
        ]  # fmt: skip
    items.append({"role": "assistant", "content": "Fixed: the parser now keeps the tail. " * 25})
    return items


def _text_bytes(items: list[dict[str, Any]]) -> int:
    # What a tokenizer would see: the strings, without the JSON around them.
    total = 0
    stack: list[Any] = [items]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, dict):
            # Images are counted in tokens per image, not by their base64.
            skip = ("id", "type", "status", "image_url")
            stack.extend(v for k, v in value.items() if k not in skip)
        elif isinstance(value, list):
            stack.extend(value)
    return total


def largest_stored(window: int, *, calls: int, output_bytes: int, images: int) -> tuple[int, int]:
    """(turns, stored bytes) of the last turn before compaction."""
    request = orjson.loads((ROOT / "tests/fixtures/requests/codex_turn2.json").read_bytes())
    history: list[dict[str, Any]] = list(request["input"])
    image = f"data:image/png;base64,{'A' * IMAGE_BYTES}"
    for _ in range(images):
        history.append({"role": "user", "content": [{"type": "input_image", "image_url": image,
                                                     "detail": "high"}]})  # fmt: skip
    budget = window * COMPACT_AT - images * IMAGE_TOKENS
    budget -= len(orjson.dumps(request["tools"])) / BYTES_PER_TOKEN
    turns = 0
    while True:
        turn = _turn(turns, calls, output_bytes)
        if (_text_bytes(history) + _text_bytes(turn)) / BYTES_PER_TOKEN > budget:
            break
        history += turn
        turns += 1
    stored = StoredResponse(make_response("resp_measure"), normalize_input(history))
    return turns, len(stored.encode())


def main() -> None:
    print("| context window | session | turns before compaction | largest stored response |")
    print("|---|---|---|---|")
    for window in (272_000, 1_000_000):
        for label, calls, output_bytes, images in (
            ("8 calls/turn, 2 KiB outputs", 8, 2_048, 0),
            ("8 calls/turn, 10 KiB outputs", 8, 10_240, 0),
            ("as above + 10 screenshots", 8, 10_240, 10),
            ("as above + 40 screenshots", 8, 10_240, 40),
        ):
            turns, size = largest_stored(
                window, calls=calls, output_bytes=output_bytes, images=images
            )
            print(f"| {window:,} | {label} | {turns} | {size / MiB:.1f} MiB |")


if __name__ == "__main__":
    main()
