"""Sealed reasoning: the ``encrypted_content`` of reasoning items, for stateless clients.

A client that runs with ``store: false`` (Codex, the AI SDK) asks for
``include: ["reasoning.encrypted_content"]`` and sends each reasoning item back on its next
turn; the token in ``encrypted_content`` is the only way the reasoning can come back to us.
A Chat backend has no such token, so stream_mw makes one.

Format (version 1)::

    smw1.<base64url(zlib(reasoning as UTF-8))>.<base64url(HMAC-SHA256(key, mac input))>

with the MAC input ``b"smw1" + len(tenant) as 4 bytes big-endian + tenant + payload``, where
``payload`` is the middle field's bytes before base64. Base64 is unpadded.

Why integrity and not secrecy: the reasoning is the model's own output, already streamed in
full to the same client, so hiding it from that client protects nothing. What matters is that
text we pass upstream as the model's *own* reasoning really is what the model wrote for this
tenant: a client must not be able to put words in the model's mouth, and one tenant's token
must not open for another. The MAC gives both (the tenant is in the MAC input, not in the
token). It is checked before anything is decompressed, so a forged token costs one HMAC.

The key comes from ``Settings.reasoning_key`` and must be the same in every worker that may
see the next turn. Without one, each process draws a random key once (and warns once): tokens
then open only in the process that made them, and not after a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import zlib

from ._observe import logger

__all__ = [
    "PREFIX",
    "SealError",
    "compaction_tenant",
    "open_reasoning",
    "reasoning_key",
    "seal_reasoning",
]

#: Every token starts with this; the version lets a later format coexist.
PREFIX = "smw1."
_VERSION = b"smw1"
_KEY_BYTES = 32
_NO_KEY_WARNING = (
    "stream_mw: reasoning_key is not set; reasoning.encrypted_content tokens are signed with "
    "a random key of this process and will not open in another worker or after a restart. "
    "Set STREAM_MW_REASONING_KEY (the same in every worker)."
)

_process_key: bytes | None = None
_process_key_lock = threading.Lock()


class SealError(ValueError):
    """A token that is not ours: malformed, signed with another key, or for another tenant."""


def reasoning_key(configured: str | None) -> bytes:
    """The key tokens are signed with: the configured one, else this process's random key."""
    if configured is not None:
        return configured.encode("utf-8")
    global _process_key
    if _process_key is None:
        with _process_key_lock:
            if _process_key is None:
                logger.warning(_NO_KEY_WARNING)
                _process_key = secrets.token_bytes(_KEY_BYTES)
    return _process_key


def _mac(key: bytes, tenant: str, payload: bytes) -> bytes:
    bound = tenant.encode("utf-8")
    message = _VERSION + len(bound).to_bytes(4, "big") + bound + payload
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal_reasoning(text: str, *, key: bytes, tenant: str) -> str:
    """The token carrying ``text`` for ``tenant``."""
    payload = zlib.compress(text.encode("utf-8"))
    return f"{PREFIX}{_b64(payload)}.{_b64(_mac(key, tenant, payload))}"


def open_reasoning(token: str, *, key: bytes, tenant: str, max_bytes: int) -> str:
    """The reasoning text a token carries, once its MAC checks out for ``tenant``.

    Raises:
        SealError: The token is malformed, was made with another key or for another tenant,
            or would inflate past ``max_bytes``.
    """
    if not token.startswith(PREFIX):
        raise SealError("it was not issued by stream_mw")
    body, dot, tag = token[len(PREFIX) :].partition(".")
    try:
        payload = _unb64(body)
        mac = _unb64(tag)
    except (binascii.Error, ValueError):
        raise SealError("it is not valid base64url") from None
    if not dot or not hmac.compare_digest(mac, _mac(key, tenant, payload)):
        raise SealError("its signature does not match (another key, another tenant or altered)")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, max_bytes + 1)
    except zlib.error:
        raise SealError("its payload is corrupt") from None
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise SealError(f"its reasoning is larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SealError("its payload is not UTF-8") from None


def compaction_tenant(tenant: str) -> str:
    """The MAC tenant of a compaction summary's token: the tenant in another domain, so that a
    reasoning token never opens as a compaction summary, nor the other way round."""
    return "compaction\x00" + tenant
