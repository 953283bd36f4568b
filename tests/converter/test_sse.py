"""The incremental SSE decoder and the encoder: line endings, fields, limits, split reads."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest

from stream_mw import StreamConverter, UpstreamProtocolError
from stream_mw._sse import SSEDecoder, SSEMessage, encode_event, event_payloads


def decode_whole(data: bytes, limit: int = 1 << 20) -> list[SSEMessage]:
    decoder = SSEDecoder(limit)
    return decoder.feed(data) + decoder.flush()


def decode_pieces(pieces: list[bytes], limit: int = 1 << 20) -> list[SSEMessage]:
    decoder = SSEDecoder(limit)
    out: list[SSEMessage] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.flush()


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def datas(messages: list[SSEMessage]) -> list[bytes]:
    return [m.data for m in messages]


# A stream exercising every rule at once; every split of it must decode the same.
MIXED = (
    b"\xef\xbb\xbf: OPENROUTER PROCESSING\r\n\r\n"
    b'data: {"a":1}\r\n\r\n'
    b'data:{"b":"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}\r\r'
    b"event: ping\nid: 7\nretry: 1500\ndata: x\ndata: y\n\n"
    b": keep-alive\n\n"
    b"error: boom\n\n"
    b'event: error\ndata: {"error": {"message": "bad"}}\n\n'
    b"data: [DONE]\n\n"
)


def test_lf_crlf_and_lone_cr_line_endings_decode_alike() -> None:
    lf = b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert datas(decode_whole(lf)) == [b'{"a":1}', b'{"b":2}']
    assert datas(decode_whole(lf.replace(b"\n", b"\r\n"))) == datas(decode_whole(lf))
    assert datas(decode_whole(lf.replace(b"\n", b"\r"))) == datas(decode_whole(lf))


def test_crlf_split_between_reads_is_one_line_ending_not_a_blank_line() -> None:
    # "\r" ends one read, "\n" starts the next: a blank line here would dispatch early.
    pieces = [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]
    assert datas(decode_pieces(pieces)) == [b"a\nb"]


def test_lone_cr_at_the_end_of_a_read_followed_by_text_is_a_line_ending() -> None:
    assert datas(decode_pieces([b"data: a\r", b"\rdata: b\r\r"])) == [b"a", b"b"]


def test_bom_at_stream_start_is_skipped_even_when_split() -> None:
    body = b'\xef\xbb\xbfdata: {"a":1}\n\n'
    assert datas(decode_whole(body)) == [b'{"a":1}']
    assert datas(decode_pieces(bytewise(body))) == [b'{"a":1}']


def test_bom_later_in_the_stream_is_data() -> None:
    messages = decode_whole(b"data: a\n\ndata: \xef\xbb\xbfb\n\n")
    assert datas(messages) == [b"a", b"\xef\xbb\xbfb"]


def test_comment_lines_are_ignored_and_comment_only_events_dispatch_nothing() -> None:
    body = b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n: inline\n\n"
    assert datas(decode_whole(body)) == [b"x"]


def test_data_field_with_and_without_the_space() -> None:
    assert datas(decode_whole(b"data:x\n\ndata: y\n\ndata:  z\n\n")) == [b"x", b"y", b" z"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert datas(decode_whole(b"data: {\ndata: }\n\n")) == [b"{\n}"]


def test_event_id_and_retry_fields_are_reported() -> None:
    (message,) = decode_whole(b"event: chunk\nid: 42\nretry: 3000\ndata: x\n\n")
    assert message == SSEMessage(b"x", event="chunk", id="42", retry=3000)
    assert not message.is_error


def test_event_error_marks_an_error_event() -> None:
    (message,) = decode_whole(b'event: error\ndata: {"message":"x"}\n\n')
    assert message.is_error
    assert message.data == b'{"message":"x"}'


def test_llamacpp_error_field_is_an_error_with_its_value_as_message() -> None:
    (message,) = decode_whole(b'error: {"code":500,"message":"slot unavailable"}\n\n')
    assert message.is_error
    assert message.error == '{"code":500,"message":"slot unavailable"}'
    assert message.data == b""


def test_unknown_fields_and_lines_without_colon_are_ignored() -> None:
    assert datas(decode_whole(b"foo: bar\nbaz\ndata: x\n\n")) == [b"x"]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode_whole(b"event: ping\n\nid: 3\n\n") == []


def test_empty_data_line_dispatches_an_empty_event() -> None:
    assert datas(decode_whole(b"data:\n\n")) == [b""]


def test_done_marker_is_passed_on_as_data() -> None:
    assert datas(decode_whole(b"data: [DONE]\n\n")) == [b"[DONE]"]


def test_multibyte_characters_split_across_reads_survive() -> None:
    text = "naïve — 日本語 😀"
    body = b"data: " + orjson.dumps({"t": text}, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"
    for messages in (decode_whole(body), decode_pieces(bytewise(body))):
        assert orjson.loads(messages[0].data) == {"t": text}


def test_unterminated_last_event_with_data_is_dispatched_at_flush() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b":2}') == [SSEMessage(b'{"a":1}')]
    assert decoder.flush() == [SSEMessage(b'{"b":2}')]


def test_unterminated_comment_is_dropped_at_flush() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": ping")
    assert decoder.flush() == []


def test_flush_of_a_pending_partial_line_with_trailing_newline() -> None:
    assert datas(decode_pieces([b"data: a\n"])) == [b"a"]


def test_byte_by_byte_equals_whole_equals_random_splits() -> None:
    whole = decode_whole(MIXED)
    assert len(whole) == 6
    assert decode_pieces(bytewise(MIXED)) == whole
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.randint(0, len(MIXED)) for _ in range(rng.randint(1, 15)))
        bounds = [0, *cuts, len(MIXED)]
        pieces = [MIXED[a:b] for a, b in itertools.pairwise(bounds)]
        assert decode_pieces(pieces) == whole


def test_feed_data_returns_plain_events_as_bytes_and_others_as_messages() -> None:
    decoder = SSEDecoder()
    out = decoder.feed_data(b"data: a\n\nevent: x\ndata: b\n\ndata: c\ndata: d\n\n")
    assert out == [b"a", SSEMessage(b"b", event="x"), b"c\nd"]


def test_idle_is_false_while_an_event_is_buffered() -> None:
    decoder = SSEDecoder()
    assert not decoder.idle  # the stream start (a possible BOM) is still ahead
    decoder.feed(b"data: a\n\n")
    assert decoder.idle
    decoder.feed(b"data: b")
    assert not decoder.idle
    decoder.feed(b"\n\n")
    assert decoder.idle
    decoder.feed(b"data: c\n\r")
    assert not decoder.idle  # a CR may be followed by its LF


def test_complete_event_over_the_limit_raises_naming_the_setting() -> None:
    decoder = SSEDecoder(64)
    with pytest.raises(UpstreamProtocolError, match="max_event_bytes"):
        decoder.feed(b"data: " + b"x" * 100 + b"\n\n")


def test_unterminated_event_over_the_limit_raises_before_growing_further() -> None:
    decoder = SSEDecoder(64)
    decoder.feed(b"data: " + b"x" * 40)
    with pytest.raises(UpstreamProtocolError, match="max_event_bytes"):
        decoder.feed(b"x" * 40)


def test_events_before_an_oversized_one_in_the_same_read_come_out_first() -> None:
    # The output must not depend on the read boundaries: "ok" is delivered, then the error.
    decoder = SSEDecoder(64)
    assert decoder.feed(b"data: ok\n\ndata: " + b"x" * 100) == [SSEMessage(b"ok")]
    assert decoder.error is not None
    with pytest.raises(UpstreamProtocolError, match="max_event_bytes"):
        decoder.feed(b"\n\n")
    with pytest.raises(UpstreamProtocolError, match="max_event_bytes"):
        decoder.flush()


def test_events_at_the_limit_pass_and_many_small_events_in_one_read_pass() -> None:
    decoder = SSEDecoder(64)
    event = b"data: " + b"x" * 58  # exactly 64 bytes before the blank line
    assert decoder.feed(event + b"\n\n") == [SSEMessage(b"x" * 58)]
    assert len(decoder.feed(b"data: y\n\n" * 1000)) == 1000


def test_byte_by_byte_feeding_of_a_large_event_stays_linear() -> None:
    # Never rescans: a 200 kB event fed one byte at a time finishes quickly and intact.
    body = b"data: " + b"y" * 200_000 + b"\n\n"
    decoder = SSEDecoder()
    out: list[SSEMessage] = []
    for i in range(0, len(body), 7):
        out += decoder.feed(body[i : i + 7])
    assert datas(out) == [b"y" * 200_000]


def test_encode_event_writes_the_event_line_the_data_line_and_a_blank_line() -> None:
    data = orjson.dumps({"type": "response.created", "sequence_number": 0})
    assert encode_event("response.created", data) == b"event: response.created\ndata: " + data + (
        b"\n\n"
    )
    (message,) = decode_whole(encode_event("x", b"{}"))
    assert message == SSEMessage(b"{}", event="x")


def test_release_hands_back_an_unfinished_event_and_leaves_the_decoder_idle() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: 1\n\ndata: {"par') == [SSEMessage(b"1")]
    assert not decoder.idle
    assert decoder.release(1024) == b'data: {"par'
    assert decoder.idle
    # Fed again in front of the next read, the released bytes give the event they began.
    assert decoder.feed(b'data: {"par' + b'tial"}\n\n') == [SSEMessage(b'{"partial"}')]


def test_release_keeps_an_event_larger_than_asked_or_a_pending_cr() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\ndata: " + b"x" * 100)
    assert decoder.release(50) == b""
    assert not decoder.idle
    crlf = SSEDecoder()
    crlf.feed(b"data: 1\r\n\r\ndata: 2\r")
    assert crlf.release(1024) == b""  # the CR's LF may still come: not the decoder's alone
    assert crlf.feed(b"\n\r\n") == [SSEMessage(b"2")]


def test_event_payloads_gives_back_each_events_json_as_a_run_delivers_it() -> None:
    converter = StreamConverter({"model": "m", "input": "hi", "stream": True})
    chunk = {"choices": [{"index": 0, "delta": {"content": "a\n\nb"}, "finish_reason": "stop"}]}
    data = converter.start() + converter.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    data += converter.close()
    assert data.endswith(b"data: [DONE]\n\n")
    decoded = [message for message in _decode_all(data) if message != b"[DONE]"]

    payloads = event_payloads(data)

    assert payloads == decoded
    assert [orjson.loads(p)["sequence_number"] for p in payloads] == list(range(len(payloads)))


def _decode_all(data: bytes) -> list[bytes]:
    return [message.data for message in SSEDecoder().feed(data)]
