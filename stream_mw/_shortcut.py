"""Reading a chunk without parsing it, when its bytes repeat the previous chunk's layout.

Theory of operation
-------------------
Most backends send every text (arguments, reasoning) chunk of a stream with identical bytes
but for the delta string: same id, created, model, fingerprint, keys and key order. Once one
such event has been parsed in full and translated, ``learn`` records the bytes before the
delta string (``prefix``) and after it (``suffix``). A later event that starts with the same
prefix and ends with the same suffix is the same JSON document with another string in that
place, provided what lies between is exactly one JSON string (checked by parsing it alone):
``Shortcut.delta_in`` returns that string, which is exactly what the reader would have taken
from the parsed chunk. Anything else (a finish reason, usage, another field) changes the bytes
around the string and returns ``None``, and the event takes the full path.

When the chunk also carries OpenAI's random ``obfuscation`` string after the delta, the bytes
after the delta are ``gap``, that string, then ``suffix``; both strings may vary, and each is
checked to be exactly one JSON string. Nothing reads ``obfuscation``, so its value cannot
change the translation.

``Learned`` keeps the shortcut of one holder (an open item of the caller's): a layout that
served ``PROVEN`` events is re-learned when it drifts, one that did not is given up after
``TRIES`` tries.

A shortcut works on one whole plain event (``data: …\\n\\n``), wherever it sits in a read, so
it applies as well when a read holds many events as when it holds one. It knows nothing of
items or events: the caller decides which open item a learned layout belongs to.
"""

from __future__ import annotations

import re

import orjson

__all__ = ["PROVEN", "TRIES", "Learned", "Shortcut", "learn"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_JSON_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
_IGNORED_KEY = b'"obfuscation":'
# A JSON string, captured (its escapes are checked by parsing it).
_DELTA = rb'("[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*")'
# A JSON string of printable ASCII without escapes (as OpenAI's padding is), checked in
# place; anything else is checked by parsing it.
_ASCII_STRING = re.compile(rb'"[\x20\x21\x23-\x5b\x5d-\x7e]*"')

#: A shortcut that served this many events may be re-learned when the chunk layout drifts
#: (llama.cpp's ``created`` ticks every second); one that did not is given up after
#: ``TRIES`` tries (a layout that changes some other way on every chunk).
PROVEN = 16
TRIES = 3


class Shortcut:
    """The bytes of an event around the one delta string that changes from chunk to chunk."""

    __slots__ = (
        "aperiodic",
        "end",
        "event",
        "gap",
        "hits",
        "min_len",
        "prefix",
        "start",
        "suffix",
        "tail",
    )

    def __init__(self, prefix: bytes, suffix: bytes, gap: bytes = b"") -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.gap = gap
        self.start = len(prefix)
        self.end = len(suffix)
        self.min_len = self.start + self.end + (len(gap) + 4 if gap else 2)
        # Whether no proper suffix of ``gap`` is also its prefix (so two occurrences of it
        # never overlap).
        self.aperiodic = not any(gap[k:] == gap[:-k] for k in range(1, len(gap)))
        # ``gap``, the ignored string when it is plain ASCII, and ``suffix``.
        self.tail = re.compile(re.escape(gap) + _ASCII_STRING.pattern + re.escape(suffix))
        # The whole event, its delta string captured, for reading a run of events in a read
        # (one regular-expression match per event, which also finds where the event ends).
        self.event = re.compile(
            re.escape(prefix)
            + _DELTA
            + (re.escape(gap) + _ASCII_STRING.pattern if gap else b"")
            + re.escape(suffix)
        ).match
        self.hits = 0

    def run(self, data: bytes, pos: int, limit: int, texts: list[str]) -> int:
        """Read the events with this layout that follow one another from ``pos`` (each at
        most ``limit`` bytes), appending their non-empty deltas to ``texts``; return where
        the first other event (or the end) starts.

        The match takes an ignored string of plain ASCII only; an event with another kind
        is left to ``delta_in``. (For one event on its own, ``delta_in`` is the cheaper of
        the two.)"""
        match = self.event
        read = 0
        found = match(data, pos)
        while found is not None:
            stop = found.end()
            if stop - pos > limit:
                break
            try:
                text = _loads(found.group(1))
            except _JSONDecodeError:
                break
            if text:
                texts.append(text)
            pos = stop
            read += 1
            found = match(data, pos)
        self.hits += read
        return pos

    def delta_in(self, data: bytes, pos: int, stop: int) -> str | None:
        """The delta string of the event ``data[pos:stop]`` when it has this layout, else
        ``None``."""
        start = pos + self.start
        if stop - pos < self.min_len or not data.startswith(self.prefix, pos):
            return None
        gap = self.gap
        if gap:
            # The delta ends where ``gap`` starts, when what follows ``gap`` is one JSON
            # string (the ignored one) and then ``suffix``.
            quote = data.rfind(b'"', start, stop - self.end - 1)
            at = quote - len(gap)
            if self.aperiodic and at >= start and self.tail.fullmatch(data, at, stop):
                # The usual case, checked in one go: ``gap``, a plain ASCII string (found
                # by its opening quote), ``suffix``. That ``gap`` is the last one (a later
                # one would overlap it, and ``gap`` repeats no part of itself).
                stop = at
            else:
                if not data.endswith(self.suffix, start, stop):
                    return None
                stop -= self.end
                at = data.rfind(gap, start, stop)
                if at < 0:
                    return None
                after = at + len(gap)
                if _ASCII_STRING.fullmatch(data, after, stop) is None and not _one_string(
                    data[after:stop]
                ):
                    return None
                stop = at
        else:
            if not data.endswith(self.suffix, start, stop):
                return None
            stop -= self.end
        # Quotes at both ends: whitespace around the string would be a line break outside it
        # (which SSE reads differently).
        if stop - start < 2 or data[start] != 0x22 or data[stop - 1] != 0x22:
            return None
        try:
            value = _loads(data[start:stop])
        except _JSONDecodeError:
            return None
        if type(value) is not str:
            return None
        self.hits += 1
        return value


def _one_string(data: bytes) -> bool:
    """Whether ``data`` is exactly one JSON string."""
    if data[:1] != b'"' or data[-1:] != b'"':
        return False
    try:
        value = _loads(data)
    except _JSONDecodeError:
        return False
    return type(value) is str


def learn(data: bytes, key: bytes) -> Shortcut | None:
    """The shortcut for the event ``data`` around the string value of ``key``, when ``key``
    occurs exactly once (an unescaped quote cannot occur inside a JSON string, so each match
    is a real key)."""
    at = data.find(key)
    if at < 0 or data.find(key, at + 1) >= 0:
        return None
    start = at + len(key)
    match = _JSON_STRING.match(data, start)
    if match is None:
        return None
    ignored = data.find(_IGNORED_KEY, match.end())
    if (
        ignored >= 0
        and data.find(_IGNORED_KEY, ignored + 1) < 0
        and data.find(_IGNORED_KEY) == ignored
    ):
        value_at = ignored + len(_IGNORED_KEY)
        value = _JSON_STRING.match(data, value_at)
        if value is not None:
            return Shortcut(data[:start], data[value.end() :], data[match.end() : value_at])
    return Shortcut(data[:start], data[match.end() :])


class Learned:
    """The shortcut learned for one holder (the caller's open text part, call or reasoning
    item, which this module sees only as an object to compare by identity)."""

    __slots__ = ("holder", "shortcut", "tries")

    def __init__(self) -> None:
        self.holder: object = None
        self.shortcut: Shortcut | None = None
        self.tries = TRIES

    def update(self, holder: object, data: bytes, key: bytes) -> None:
        """Learn the layout of ``data``, an event of ``holder`` that was read in full, around
        the string value of ``key`` (unless this holder's layout has been given up)."""
        if holder is not self.holder:
            self.holder = holder
            self.shortcut = None
            self.tries = TRIES
        shortcut = self.shortcut
        if shortcut is None or shortcut.hits < PROVEN:
            if self.tries <= 0:
                self.shortcut = None  # this upstream's layout varies: stop trying
                return
            self.tries -= 1
        self.shortcut = learn(data, key)
