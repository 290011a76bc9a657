"""The checks every WeChat push passes before it is read, shared by the event URL and the message URL.

A push is refused with a `PushRejected` naming the fault when its body is over 64 KiB, a query parameter is
missing or malformed, its ``timestamp`` is further from the gateway's clock than the accepted window (either
way: a captured push cannot be replayed later), the envelope is not safe XML with an ``Encrypt`` element,
``msg_signature`` does not match that element, or it does not decrypt to a message for this component
(protocol §1). The callers decide what comes between these steps (which platform, which envelope elements
must match), so each is its own function, applied in this order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import NamedTuple

from gateway.crypto import MessageCrypto
from gateway.errors import (
    AppIdMismatch,
    CryptoError,
    PushAppIdMismatch,
    PushParameterInvalid,
    PushParameterMissing,
    PushSignatureInvalid,
    PushTimestampStale,
    PushTooLarge,
    PushUndecryptable,
    PushXmlInvalid,
    SignatureInvalid,
    XmlRejected,
)
from gateway.registry.model import Platform
from gateway.xml import Envelope, parse_envelope

__all__ = [
    "MAX_PUSH_BYTES",
    "PushParameters",
    "decrypt_push",
    "platform_crypto",
    "push_parameters",
    "read_envelope",
]

MAX_PUSH_BYTES = 64 * 1024
_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_NONCE = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII; WeChat sends digits


class PushParameters(NamedTuple):
    """The signed query parameters of a push."""

    msg_signature: str
    timestamp: str
    nonce: str


# Keyed by the whole platform (frozen, hashable): a reload that changes its token or key gets a new one.
@functools.lru_cache(maxsize=256)
def platform_crypto(platform: Platform) -> MessageCrypto:
    """WXBizMsgCrypt of a platform: its token, key and component_appid."""
    return MessageCrypto(
        platform.token.reveal(), platform.encoding_aes_key.reveal(), platform.component_appid
    )


def push_parameters(query: Mapping[str, str], body: bytes, *, now: float, window_s: float) -> PushParameters:
    """Refuse an oversized body, then read and check ``msg_signature``, ``timestamp`` and ``nonce``;
    ``timestamp`` must be within ``window_s`` seconds of ``now``."""
    if len(body) > MAX_PUSH_BYTES:
        raise PushTooLarge(f"push bodies are limited to {MAX_PUSH_BYTES} bytes")
    for name in ("msg_signature", "timestamp", "nonce"):
        if not query.get(name):
            raise PushParameterMissing(name)
    encrypt_type = query.get("encrypt_type", "aes")
    if encrypt_type != "aes":
        raise PushParameterInvalid("encrypt_type", "encrypt_type must be aes: plaintext pushes are refused")
    msg_signature, timestamp, nonce = query["msg_signature"], query["timestamp"], query["nonce"]
    if not _SIGNATURE.fullmatch(msg_signature):
        raise PushParameterInvalid("msg_signature", "msg_signature must be 40 hexadecimal digits")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise PushParameterInvalid("timestamp", "timestamp must be decimal digits")
    if not _NONCE.fullmatch(nonce):
        raise PushParameterInvalid("nonce", "nonce must be 1-64 printable ASCII characters")
    offset = int(timestamp) - now
    if abs(offset) > window_s:
        raise PushTimestampStale(
            f"timestamp is {abs(offset):.0f} s {'behind' if offset < 0 else 'ahead of'} the gateway's clock, "
            f"outside the accepted window of {window_s:g} s",
        )
    return PushParameters(msg_signature, timestamp, nonce)


def read_envelope(body: bytes) -> Envelope:
    """The plaintext envelope of a push, parsed safely."""
    try:
        return parse_envelope(body)
    except XmlRejected as exc:
        raise PushXmlInvalid(str(exc)) from None


def decrypt_push(crypto: MessageCrypto, parameters: PushParameters, encrypt: str) -> bytes:
    """Verify ``msg_signature`` over ``encrypt`` and decrypt it (trailing appid: the component's)."""
    try:
        crypto.verify(parameters.msg_signature, parameters.timestamp, parameters.nonce, encrypt)
        return crypto.decrypt(encrypt)
    except SignatureInvalid:
        raise PushSignatureInvalid("msg_signature does not match the Encrypt element") from None
    except AppIdMismatch:
        raise PushAppIdMismatch("the encrypted message is for another appid") from None
    except CryptoError as exc:
        raise PushUndecryptable(f"the Encrypt element cannot be decrypted: {exc}") from None
