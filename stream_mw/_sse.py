"""Server-sent events: an incremental, bounded decoder and the one-line encoder.

Strategy
--------
The decoder works on bytes end to end and never decodes a value before its event is complete,
so a multi-byte UTF-8 character split across two reads needs no special care: ``data`` is
handed on as bytes (``orjson.loads`` takes them as they are), and ``event``/``id``/``error``
values are decoded only once their line is whole.

Line endings are normalised per read, in C: ``\\r\\n`` and a lone ``\\r`` both become ``\\n``
(``bytes.replace``). A ``\\r`` at the very end of a read is turned into ``\\n`` at once and
remembered, so that a ``\\n`` opening the next read (the second half of a split ``\\r\\n``) is
dropped rather than read as a blank line. This is httpx's ``LineDecoder`` rule, done on bytes.

After normalisation an event is the bytes up to the next ``\\n\\n``, found with ``bytes.find``.
The common event, one ``data: {...}`` line, is recognised by its first six bytes and sliced
out without splitting lines; anything else (comments, ``event:``, ``id:``, ``retry:``,
multi-line ``data``, ``data:`` without the space, the non-standard ``error:`` field some
llama.cpp builds send) goes through the general field parser of the SSE specification.

Every buffer is bounded: an event (complete, or still being buffered because its blank line
has not arrived) larger than ``max_event_bytes`` raises ``UpstreamProtocolError`` naming that
setting, so a peer that never sends a blank line cannot grow memory without limit. Events
that precede the oversized one in the same read are returned first and the error is raised
by the next call (it is also left in ``error``), so the events seen never depend on where the
reads were split. The precedent is h11's ``max_incomplete_event_size``.

Deviations from the SSE specification, on purpose: the last event of a body that ends without
its blank line is dispatched by ``flush()`` (the openai SDK drops it; an upstream that omits
the final blank line is more common than one that means to discard its last event), and the
decoder does not track the last event id across events (no reconnection happens here).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import UpstreamProtocolError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "SSEMessage", "encode_event", "event_payloads"]

#: The default bound on one event, matching ``Settings.max_event_bytes``.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched server-sent event."""

    #: The ``data`` lines joined with ``\\n``, as bytes (``b""`` when the event had none).
    data: bytes
    #: The ``event:`` field, or ``None`` when absent (the SSE default type is "message").
    event: str | None = None
    #: The ``id:`` field, or ``None``.
    id: str | None = None
    #: The ``retry:`` field in milliseconds, or ``None``.
    retry: int | None = None
    #: The value of a non-standard ``error:`` field (llama.cpp), or ``None``.
    error: str | None = None

    @property
    def is_error(self) -> bool:
        """Whether the upstream marked this event as an error (``event: error`` or ``error:``)."""
        return self.error is not None or self.event == "error"


class SSEDecoder:
    """Incremental SSE decoder: ``feed()`` bytes as they arrive, ``flush()`` at EOF.

    Args:
        max_event_bytes: Largest event accepted, in bytes, including field names and comment
            lines. A larger one raises ``UpstreamProtocolError``.

    ``feed()`` and ``flush()`` return the events completed so far. The output does not depend
    on how the stream was split into reads.
    """

    __slots__ = ("_buf", "_head", "_max", "_pending_cr", "_scan", "_started", "error", "idle")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        # Bytes of an event whose blank line has not arrived yet (normalised line endings).
        self._buf = bytearray()
        # How far ``_buf`` has already been searched for ``\n\n``, so it is never rescanned.
        self._scan = 0
        # The first bytes of the stream, held until we know whether they are a BOM.
        self._head = b""
        self._started = False
        self._pending_cr = False
        #: True when the decoder holds no partial state (past the stream start, nothing
        #: buffered, no pending CR): a read that is exactly whole ``\n``-terminated events
        #: may then be parsed without the decoder, with the same result.
        self.idle = False
        #: The size-limit error, once an event broke ``max_event_bytes``. The events that
        #: came before it in the same read are returned first; every later call raises it.
        self.error: UpstreamProtocolError | None = None

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Decode one read of the body; returns the events it completed."""
        return [_message(m) for m in self.feed_data(data)]

    def feed_data(self, data: bytes) -> list[bytes | SSEMessage]:
        """Like ``feed()``, but an event made of ``data`` lines only comes back as its data
        bytes rather than an ``SSEMessage``: the converter's hot path allocates nothing else."""
        if self.error is not None:
            raise self.error
        if type(data) is not bytes:
            data = bytes(data)
        if not self._started:
            data = self._head + data
            if len(data) < 3 and _BOM.startswith(data):
                self._head = data
                return []
            self._started = True
            self._head = b""
            if data[:3] == _BOM:
                data = data[3:]
        if self._pending_cr:
            self._pending_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._pending_cr = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not data:
            self.idle = not self._buf and not self._pending_cr
            return []
        buf = self._buf
        if buf:
            buf += data
            drained = self._drain_buffer()
            self.idle = not buf and not self._pending_cr
            return drained
        # Fast path: nothing buffered, so search the read itself without copying it.
        out: list[bytes | SSEMessage] = []
        pos = 0
        find = data.find
        limit = self._max
        while True:
            end = find(b"\n\n", pos)
            if end < 0:
                break
            if end - pos > limit:
                return self._overflow(out)
            if data[pos : pos + 6] == b"data: ":
                block = data[pos + 6 : end]
                if b"\n" not in block:
                    out.append(block)
                    pos = end + 2
                    continue
            message = _parse_block(data[pos:end])
            if message is not None:
                out.append(message)
            pos = end + 2
        if pos < len(data):
            if len(data) - pos > limit:
                return self._overflow(out)
            buf += data[pos:] if pos else data
            # The last byte may be the first half of the blank line: search from it next time.
            self._scan = len(buf) - 1
        self.idle = not buf and not self._pending_cr
        return out

    def release(self, max_bytes: int) -> bytes:
        """Hand back the unfinished event the decoder is buffering, when that is all it holds
        (past the stream start, no pending CR) and it is at most ``max_bytes`` long, and
        become ``idle``; else ``b""``. The caller must put the bytes in front of the next read
        it feeds, which gives the same events."""
        buf = self._buf
        if (
            not buf
            or len(buf) > max_bytes
            or not self._started
            or self._pending_cr
            or self.error is not None
        ):
            return b""
        held = bytes(buf)
        buf.clear()
        self._scan = 0
        self.idle = True
        return held

    def _drain_buffer(self) -> list[bytes | SSEMessage]:
        buf = self._buf
        limit = self._max
        out: list[bytes | SSEMessage] = []
        pos = 0
        start = self._scan
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            if end - pos > limit:
                return self._overflow(out)
            message = _parse_block(bytes(buf[pos:end]))
            if message is not None:
                out.append(message)
            start = pos = end + 2
        if pos:
            del buf[:pos]
        if len(buf) > limit:
            return self._overflow(out)
        self._scan = max(len(buf) - 1, 0)
        return out

    def _overflow(self, out: list[bytes | SSEMessage]) -> list[bytes | SSEMessage]:
        # Keep what came before the oversized event (the output must not depend on how the
        # body was split into reads) and refuse everything after it, buffering nothing.
        self.error = UpstreamProtocolError(
            f"upstream sent an SSE event larger than max_event_bytes ({self._max} bytes); "
            "raise Settings.max_event_bytes if this upstream legitimately sends events that large"
        )
        self._buf.clear()
        self.idle = False
        if not out:
            raise self.error
        return out

    def flush(self) -> list[SSEMessage]:
        """End of stream: dispatch an unterminated last event that has data (leniently).

        The decoder is reset, so it could decode a new stream afterwards."""
        if self.error is not None:
            raise self.error
        block = bytes(self._buf) if self._started else self._head
        self._buf.clear()
        self._head = b""
        self._scan = 0
        self._started = False
        self._pending_cr = False
        self.idle = False
        if len(block) > self._max:
            self._overflow([])
        message = _parse_block(block)
        return [] if message is None else [_message(message)]


def _message(message: bytes | SSEMessage) -> SSEMessage:
    return message if isinstance(message, SSEMessage) else SSEMessage(message)


def _parse_block(block: bytes) -> bytes | SSEMessage | None:
    """Parse one event's lines per the SSE field rules.

    Returns the data bytes for an event with data lines only, an ``SSEMessage`` when any other
    field is set, and ``None`` when nothing is to be dispatched (comments only, no data)."""
    data: list[bytes] = []
    event: str | None = None
    event_id: str | None = None
    retry: int | None = None
    error: list[bytes] | None = None
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # blank, or a ":" comment such as ": keep-alive"
            continue
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                event_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                retry = int(value)
        elif name == b"error":
            if error is None:
                error = []
            error.append(value)
        # Other field names are ignored, as the specification requires.
    if error is None:
        if not data:
            return None
        if event is None and event_id is None and retry is None:
            return data[0] if len(data) == 1 else b"\n".join(data)
    return SSEMessage(
        b"\n".join(data),
        event,
        event_id,
        retry,
        None if error is None else b"\n".join(error).decode("utf-8", "replace"),
    )


def encode_event(event_type: str, json_data: bytes) -> bytes:
    """One SSE event: ``event: <type>\\ndata: <json>\\n\\n``. ``json_data`` must be one line
    (compact JSON, as ``orjson.dumps`` writes it)."""
    return b"event: " + event_type.encode() + b"\ndata: " + json_data + b"\n\n"


def event_payloads(data: bytes) -> list[bytes]:
    """The JSON of each event in ``data``, ``[DONE]`` left out.

    Not a decoder: ``data`` must be whole events framed as ``encode_event`` and the
    converter's writer frame them (one ``data:`` line each, compact JSON, which never holds a
    blank line), as a run hands them to its delivery.
    """
    payloads = []
    for block in data.split(b"\n\n"):
        _, found, payload = block.partition(b"data: ")
        if found and payload != b"[DONE]":
            payloads.append(payload)
    return payloads
