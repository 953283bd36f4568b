"""Client keys: who may use the gateway, and which store tenant each caller is.

A gateway that adds its upstream key to every request it forwards hands that key to anyone
who can reach it. ``ClientKeys`` closes that door: with ``Settings.client_keys`` set, every
HTTP request the middleware sees (the Responses routes and everything it passes through,
such as ``/v1/chat/completions``) must carry ``Authorization: Bearer <key>`` with one of the
keys, or it is answered 401 in OpenAI's shape before the wrapped app is called. Health and
readiness probes are exempt: orchestrators call them without credentials.

Only SHA-256 digests of the keys are kept. A presented key is hashed and its digest compared
with every known digest using ``hmac.compare_digest``, and the loop does not stop at a match,
so the time taken says nothing about which key, or how much of one, matched.

A key may carry a name. A named key's requests share the store tenant ``key:<name>``, so
several keys with one name (a rotation: old and new key side by side) see the same stored
responses; an unnamed key is its own tenant, as an ``Authorization`` header is without
client keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._errors import ConfigurationError

__all__ = ["CLIENT_SCOPE_KEY", "ClientKeys", "unauthorized_body"]

#: Where the middleware records the authenticated key's tenant in the ASGI scope, for
#: ``tenant_key`` (and for apps inside that want to know who called).
CLIENT_SCOPE_KEY = "stream_mw.client"

_BEARER = b"bearer "


class ClientKeys:
    """The keys clients must present, kept as SHA-256 digests.

    Args:
        keys: The keys, as an iterable of keys or a mapping of key to name (``None`` for an
            unnamed key).

    Raises:
        ConfigurationError: no keys, an empty key, or a key with whitespace in it.
    """

    __slots__ = ("_entries",)

    def __init__(self, keys: Iterable[str] | Mapping[str, str | None]) -> None:
        named = keys.items() if isinstance(keys, Mapping) else ((key, None) for key in keys)
        entries: list[tuple[bytes, str]] = []
        for key, name in named:
            if not isinstance(key, str) or key.split() != [key]:
                raise ConfigurationError(
                    "client_keys: every key must be a non-empty string without whitespace"
                )
            digest = _digest(key.encode("utf-8"))
            # Unnamed keys are tenants of their own, named after their digest, never the key.
            tenant = f"key:{name}" if name else "key-sha256:" + digest.hex()
            entries.append((digest, tenant))
        if not entries:
            raise ConfigurationError("client_keys must hold at least one key")
        self._entries = tuple(entries)

    @classmethod
    def from_file(cls, path: str | Path) -> ClientKeys:
        """Read a keys file: one key per line, optionally followed by whitespace and a name.

        ``#`` starts a comment line; blank lines are skipped::

            # team-a rotates its key: both are valid, and both see team-a's responses
            sk-gw-3f9a1c team-a
            sk-gw-77b2e0 team-a
            sk-gw-9c41d8 ci

        Raises:
            ConfigurationError: the file cannot be read or holds no key.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(
                f"cannot read client keys file {str(path)!r}: {reason}"
            ) from None
        keys: dict[str, str | None] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, *name = line.split(None, 1)
            keys[key] = name[0].strip() if name else None
        if not keys:
            raise ConfigurationError(f"client keys file {str(path)!r} holds no key")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        # Never the digests: they would let anyone test guesses offline.
        return f"ClientKeys(<{len(self._entries)} keys>)"

    def tenant_for(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The tenant of the request's ``Authorization: Bearer`` key, ``None`` when it has
        no valid key."""
        token = None
        for name, value in headers:
            if name == b"authorization":
                if value[: len(_BEARER)].lower() == _BEARER:
                    token = value[len(_BEARER) :].strip()
                break
        if not token:
            return None
        presented = _digest(token)
        found = None
        for digest, tenant in self._entries:
            # No early exit: every request compares against every key.
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def unauthorized_body(has_credential: bool) -> dict[str, object]:
    """OpenAI's 401 body for a missing or wrong key (same type, code and wording)."""
    message = (
        "Incorrect API key provided. Use one of the keys this gateway was given."
        if has_credential
        else "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
