"""Benchmark: microseconds per upstream chunk for ``StreamConverter``, against two references.

Run: ``python tests/benchmarks/bench_converter.py [--rounds N]`` (not collected by pytest).

Five upstream streams, each fed in three read patterns (one SSE event per read, as a quiet
upstream flushes them; 4 KiB reads, several events per read and events cut across reads, as a
busy upstream or a loaded gateway delivers them; every event split in two reads):

- **text**: a role chunk, 2,000 ``content`` chunks, a finish chunk, a usage chunk, ``[DONE]``;
- **tools**: two function calls of 500 argument fragments each (1,000 fragments), as vLLM and
  OpenAI stream them (id and name on the first fragment, ``id: null`` after), then finish,
  usage, ``[DONE]``;
- **reasoning**: 2,000 ``reasoning_content`` chunks (DeepSeek, Qwen and vLLM reasoning
  models), then a short answer; LiteLLM is skipped there;
- **text, obfuscated**: the text stream as OpenAI sends it, with a random ``obfuscation``
  string on every chunk (the converter's shortcut lets that string vary);
- **text, laid out differently**: the text stream with a counter field that changes on every
  chunk, which defeats the converter's same-layout shortcut, so its full path is measured.
  LiteLLM is skipped for these two.

For each stream, one run measures, round by round and interleaved (the machine is noisy, so
each round times every contender once and the medians are compared):

- **converter**: ``StreamConverter.start/feed/close`` from upstream bytes to Responses bytes;
- **(a) floor**: the least any converter must do per chunk: split the SSE body on blank
  lines, ``orjson.loads`` each event and ``orjson.dumps`` one object per chunk (the parsed
  chunk itself), framed as SSE;
- **(b) LiteLLM**: ``LiteLLMCompletionStreamingIterator`` (litellm, unpinned, the code behind
  its ``/v1/responses`` bridge for Chat-only providers) iterated over the same chunks,
  pre-built as ``ModelResponseStream`` objects outside the timed region (so its figure does
  not depend on the read pattern; it is shown beside each). Only its
  transformation is timed: no SSE parsing, no pydantic construction of the input and no
  serialisation of its output (the proxy would add those), which favours LiteLLM.

Targets: converter at most 1.0x the time of (a), and at least 15x faster than (b).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from stream_mw import StreamConverter

MODEL = "gpt-4o-mini"
TEXT_CHUNKS = 2_000
TOOL_FRAGMENTS = 1_000


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1_741_570_283,
        "model": MODEL,
        "system_fingerprint": "fp_06737a9306",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _usage_chunk() -> dict[str, Any]:
    chunk = _chunk({})
    chunk["choices"] = []
    chunk["usage"] = {"prompt_tokens": 21, "completion_tokens": 2_000, "total_tokens": 2_021}
    return chunk


def text_stream() -> list[dict[str, Any]]:
    words = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"content": words[i % len(words)]}) for i in range(TEXT_CHUNKS)]
    chunks += [_chunk({}, "stop"), _usage_chunk()]
    return chunks


def reasoning_stream() -> list[dict[str, Any]]:
    words = ["Let", " me", " think", " about", " it", "."]
    chunks = [_chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    chunks += [
        _chunk({"content": None, "reasoning_content": words[i % len(words)]})
        for i in range(TEXT_CHUNKS)
    ]
    chunks += [_chunk({"content": "Yes."}), _chunk({}, "stop"), _usage_chunk()]
    return chunks


def obfuscated_text_stream() -> list[dict[str, Any]]:
    """The text stream as OpenAI sends it: random ``obfuscation`` padding on every chunk."""
    chunks = text_stream()
    for n, chunk in enumerate(chunks):
        chunk["obfuscation"] = format(n * 2_654_435_761 % 16**8, "x")
    return chunks


def varying_text_stream() -> list[dict[str, Any]]:
    """The text stream with a field that changes on every chunk, so no two chunks share a
    layout and the converter's shortcut never applies."""
    chunks = text_stream()
    for n, chunk in enumerate(chunks):
        chunk["x_chunk"] = n * 2_654_435_761 % 16**8
    return chunks


def tool_stream() -> list[dict[str, Any]]:
    chunks = [_chunk({"role": "assistant", "content": None})]
    per_call = TOOL_FRAGMENTS // 2
    for index, (call_id, name) in enumerate([("call_Aa1", "get_weather"), ("call_Bb2", "lookup")]):
        for n in range(per_call):
            if n == 0:
                call = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": '{"q": "'},
                }
            elif n == per_call - 1:
                call = {"index": index, "id": None, "function": {"arguments": '"}'}}
            else:
                call = {"index": index, "id": None, "function": {"arguments": f"w{n} "}}
            chunks.append(_chunk({"tool_calls": [call]}))
    chunks += [_chunk({}, "tool_calls"), _usage_chunk()]
    return chunks


def sse_reads(chunks: list[dict[str, Any]]) -> list[bytes]:
    """One read per SSE event, the way most servers flush a stream."""
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


# --- contenders ------------------------------------------------------------------------------


def run_converter(reads: list[bytes]) -> float:
    request = {"model": MODEL, "input": "hi", "stream": True}
    start = time.perf_counter()
    converter = StreamConverter(request)
    out = [converter.start()]
    for data in reads:
        out.append(converter.feed(data))
    out.append(converter.close())
    elapsed = time.perf_counter() - start
    assert converter.response["status"] == "completed", converter.response
    return elapsed


def run_floor(reads: list[bytes]) -> float:
    loads, dumps = orjson.loads, orjson.dumps
    start = time.perf_counter()
    buffer = b""
    out = []
    for data in reads:
        buffer += data
        events = buffer.split(b"\n\n")
        buffer = events.pop()
        for event in events:
            if event.startswith(b"data: "):
                payload = event[6:]
                if payload == b"[DONE]":
                    continue
                out.append(b"data: " + dumps(loads(payload)) + b"\n\n")
    return time.perf_counter() - start


def _litellm_runner() -> Callable[[list[dict[str, Any]]], float] | None:
    try:
        from litellm.litellm_core_utils.litellm_logging import Logging
        from litellm.responses.litellm_completion_transformation.streaming_iterator import (
            LiteLLMCompletionStreamingIterator,
        )
        from litellm.types.utils import ModelResponseStream
    except ImportError:  # pragma: no cover - litellm is a test extra
        return None

    class _Wrapper:
        """Stands in for litellm.CustomStreamWrapper: yields ready ModelResponseStream chunks."""

        def __init__(self, items: list[Any]) -> None:
            self._items = iter(items)
            self.logging_obj = Logging(
                model=MODEL,
                messages=[],
                stream=True,
                call_type="responses",
                start_time=time.time(),
                litellm_call_id="bench",
                function_id="bench",
            )

        def __iter__(self) -> _Wrapper:
            return self

        def __next__(self) -> Any:
            return next(self._items)

    def run(chunks: list[dict[str, Any]]) -> float:
        objects = [ModelResponseStream(**chunk) for chunk in chunks]
        iterator = LiteLLMCompletionStreamingIterator(
            model=MODEL,
            litellm_custom_stream_wrapper=_Wrapper(objects),  # type: ignore[arg-type]
            request_input="hi",
            responses_api_request={},
            custom_llm_provider="openai",
        )
        start = time.perf_counter()
        events = list(iterator)
        elapsed = time.perf_counter() - start
        assert events[-1].type == "response.completed", events[-1].type
        return elapsed

    return run


# --- the run -----------------------------------------------------------------------------------

#: How the upstream body is cut into reads: one event per read (a quiet upstream flushing
#: every chunk), 4 KiB reads (a busy upstream or loaded gateway: several events per read,
#: events cut across reads), and every event split in two reads.
READ_PATTERNS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "1 event/read": lambda reads: reads,
    "4 KiB reads": lambda reads: _fixed_reads(b"".join(reads), 4096),
    "events split": lambda reads: [half for read in reads for half in _halves(read)],
}


def _fixed_reads(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def _halves(read: bytes) -> list[bytes]:
    middle = len(read) // 2
    return [read[:middle], read[middle:]]


def bench(
    name: str, chunks: list[dict[str, Any]], rounds: int, litellm_rounds: int
) -> list[tuple[str, str, float, float, float, float, float | None]]:
    """Median µs per chunk for each read pattern: (stream, pattern, converter, floor,
    median converter/floor ratio of the rounds, fastest converter round over fastest floor
    round, LiteLLM or None), every contender timed once per round, interleaved."""
    patterns = {label: cut(sse_reads(chunks)) for label, cut in READ_PATTERNS.items()}
    n = len(chunks)
    litellm = _litellm_runner() if litellm_rounds else None
    times: dict[str, list[float]] = {"litellm": []}
    for label in patterns:
        times[f"converter {label}"] = []
        times[f"floor {label}"] = []
    for reads in patterns.values():  # warm-up
        for _ in range(3):
            run_converter(reads)
            run_floor(reads)
    if litellm is not None:
        litellm(chunks)
    gc.collect()
    every = max(1, rounds // litellm_rounds) if litellm_rounds else 0
    for round_no in range(rounds):
        for label, reads in patterns.items():
            # Alternate the order so drift in machine speed hits both contenders alike.
            if round_no % 2:
                times[f"floor {label}"].append(run_floor(reads))
                times[f"converter {label}"].append(run_converter(reads))
            else:
                times[f"converter {label}"].append(run_converter(reads))
                times[f"floor {label}"].append(run_floor(reads))
        if litellm is not None and round_no % every == 0:
            times["litellm"].append(litellm(chunks))
    us = {k: statistics.median(v) / n * 1e6 for k, v in times.items() if v}
    # The ratio to the floor is taken round by round (the two ran back to back) and its
    # median reported: a burst of other load on the machine then spoils one round's ratio,
    # not a whole column. On a machine so busy that half the runs lose a time slice, the
    # fastest run of each (the least disturbed) is compared as well.
    return [
        (
            name,
            label,
            us[f"converter {label}"],
            us[f"floor {label}"],
            statistics.median(
                c / f
                for c, f in zip(times[f"converter {label}"], times[f"floor {label}"], strict=True)
            ),
            min(times[f"converter {label}"]) / min(times[f"floor {label}"]),
            us.get("litellm"),
        )
        for label in patterns
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--litellm-rounds", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for name, stream, with_litellm in [
        ("text", text_stream, True),
        ("tool-call", tool_stream, True),
        ("reasoning", reasoning_stream, False),
        ("text, obfuscated", obfuscated_text_stream, False),
        ("text, layout varies", varying_text_stream, False),
    ]:
        rows += bench(name, stream(), args.rounds, args.litellm_rounds if with_litellm else 0)
        print(f"... {name} done", file=sys.stderr)
    print(
        f"\nmedians of {args.rounds} interleaved rounds, µs per upstream chunk; conv/(a) is "
        "the median of the per-round ratios, 'fastest' the fastest converter round over the "
        "fastest floor round"
    )
    print("targets: converter/(a) <= 1.0x; (b)/converter >= 15x\n")
    print(
        f"{'stream':22} {'reads':14} {'converter':>10} {'(a) floor':>10} {'conv/(a)':>9} "
        f"{'fastest':>8} "
        f"{'(b) LiteLLM':>12} {'(b)/conv':>9}"
    )
    for name, label, converter, floor, ratio, best, litellm in rows:
        litellm_cells = (
            f"{litellm:12.2f} {litellm / converter:8.1f}x"
            if litellm is not None
            else f"{'-':>12} {'-':>9}"
        )
        print(
            f"{name:22} {label:14} {converter:10.2f} {floor:10.2f} {ratio:8.2f}x {best:7.2f}x "
            + litellm_cells
        )


if __name__ == "__main__":
    main()
