"""WeChat message crypto (WXBizMsgCrypt), the sealing of secrets at rest, and the HMAC key of a webhook
secret. Pure: no I/O.

WXBizMsgCrypt (protocol §1): AES-256-CBC with the IV taken from the key, PKCS#7 padding to a 32-byte
block, plaintext ``random(16) || len(4, big-endian) || msg || appid``, signature
``sha1(sorted([token, timestamp, nonce, encrypt]))``; a passive reply carries its own signature.

Secrets at rest use AES-256-GCM under ``GATEWAY_SECRET_KEY``, with a context string as associated data so
that a sealed value copied into another row (another platform's ticket, say) does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from gateway.errors import (
    AesKeyInvalid,
    AppIdMismatch,
    Base64Invalid,
    BufferInvalid,
    ConfigError,
    DecryptFailed,
    SealedSecretError,
    SignatureInvalid,
)
from gateway.xml import build_xml

__all__ = [
    "WEBHOOK_SECRET_PREFIX",
    "MessageCrypto",
    "SecretBox",
    "aes_key_from_encoding_key",
    "key_id",
    "signature",
    "webhook_key",
]

# Standard Webhooks: the key's bytes in base64 follow it (a prefix, not a secret).
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105

_BLOCK = 32  # WXBizMsgCrypt pads to 32 bytes, not to the AES block size
_AES_KEY_CHARS = re.compile(r"[A-Za-z0-9]{43}")
_RANDOM_LEN = 16
_HEADER_LEN = _RANDOM_LEN + 4
_PADDING = [bytes([n]) * n for n in range(_BLOCK + 1)]  # what n bytes of PKCS#7 padding look like


def aes_key_from_encoding_key(encoding_aes_key: str) -> bytes:
    """Decode a 43-character EncodingAESKey into the 32-byte AES key (error -40004 when malformed)."""
    if not _AES_KEY_CHARS.fullmatch(encoding_aes_key):
        raise AesKeyInvalid("EncodingAESKey must be 43 characters of [A-Za-z0-9]")
    return base64.b64decode(encoding_aes_key + "=")


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """WeChat's msg_signature: SHA-1 of the four values sorted and concatenated, lowercase hex."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324 - WeChat's protocol, not our choice


class MessageCrypto:
    """WXBizMsgCrypt for one component: signs, verifies, encrypts and decrypts pushed messages.

    ``random_bytes`` is the source of the 16-byte prefix; tests pass a fixed one. One instance may serve
    any number of threads.
    """

    def __init__(
        self,
        token: str,
        encoding_aes_key: str,
        appid: str,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._token = token
        self._key = aes_key_from_encoding_key(encoding_aes_key)
        self._iv = self._key[:16]
        self._appid = appid.encode()
        self._random_bytes = random_bytes
        self._per_thread = threading.local()  # each thread's long-lived CBC decryptor (see ``decrypt``)

    @property
    def appid(self) -> str:
        """The appid expected at the end of every plaintext (the component_appid)."""
        return self._appid.decode()

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """The msg_signature of an ``Encrypt`` value."""
        return signature(self._token, timestamp, nonce, encrypt)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise SignatureInvalid unless ``msg_signature`` matches; compared in constant time."""
        expected = self.sign(timestamp, nonce, encrypt).encode()
        if not hmac.compare_digest(expected, msg_signature.encode("utf-8", "replace")):
            raise SignatureInvalid("msg_signature does not match")

    def encrypt(self, message: bytes) -> str:
        """Encrypt ``message`` into the base64 ``Encrypt`` value."""
        plain = self._random_bytes(_RANDOM_LEN) + struct.pack(">I", len(message)) + message + self._appid
        cipher = AES.new(self._key, AES.MODE_CBC, iv=self._iv)
        return base64.b64encode(cipher.encrypt(pad(plain, _BLOCK))).decode()

    def encrypt_reply(self, message: bytes, timestamp: int, nonce: str) -> str:
        """A passive reply as WeChat expects it: ``message`` encrypted, signed over the reply's own
        ``timestamp`` and ``nonce``, in ``<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>``."""
        encrypt = self.encrypt(message)
        return build_xml(
            {
                "Encrypt": encrypt,
                "MsgSignature": self.sign(str(timestamp), nonce, encrypt),
                "TimeStamp": timestamp,
                "Nonce": nonce,
            }
        )

    def decrypt(self, encrypt: str) -> bytes:
        """Decrypt an ``Encrypt`` value and return the message bytes.

        Raises Base64Invalid, DecryptFailed (length or padding), BufferInvalid (short buffer or a length
        field past the end) or AppIdMismatch (the trailing appid is not this component's).
        """
        try:
            data = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Base64Invalid("Encrypt is not valid base64") from exc
        if not data or len(data) % AES.block_size:
            raise DecryptFailed(f"ciphertext length {len(data)} is not a positive multiple of 16")
        plain: bytes = self._decryptor().decrypt(self._iv + data)[AES.block_size :]
        pad_len = plain[-1]
        if not 1 <= pad_len <= _BLOCK or not plain.endswith(_PADDING[pad_len]):
            raise DecryptFailed("bad PKCS#7 padding")
        end = len(plain) - pad_len  # the content is plain[:end]; slices below copy only the message
        if end < _HEADER_LEN:
            raise BufferInvalid(f"decrypted buffer of {end} bytes is shorter than its header")
        msg_end = _HEADER_LEN + int.from_bytes(plain[_RANDOM_LEN:_HEADER_LEN], "big")
        if msg_end > end:
            raise BufferInvalid("message length field runs past the end of the buffer")
        if not hmac.compare_digest(plain[msg_end:end], self._appid):
            raise AppIdMismatch("the appid inside the message is not this component's")
        return plain[_HEADER_LEN:msg_end]

    def _decryptor(self) -> Any:
        """This thread's AES-CBC decryptor under the key, made once: making a pycryptodome cipher costs
        about twice what decrypting a push with it does.

        A CBC decryptor keeps the last ciphertext block it saw as the chaining value for the next call,
        and every plaintext block is D(block) XOR the ciphertext block before it. So ``decrypt`` gives it
        the IV as one more ciphertext block in front of the message: the block that comes out of the IV
        itself depends on what came before and is dropped, and every block after it is exactly what a
        fresh cipher with that IV gives. pycryptodome does all of the decryption; only the input is
        arranged.
        """
        try:
            return self._per_thread.cbc
        except AttributeError:
            self._per_thread.cbc = AES.new(self._key, AES.MODE_CBC, iv=self._iv)
            return self._per_thread.cbc


class SecretBox:
    """Seals short secrets (tickets, tokens) with AES-256-GCM for storage in the database.

    A sealed value is ``v2.<key id>.`` + urlsafe base64 of ``nonce(12) || ciphertext || tag(16)``; the
    ``context`` (e.g. ``ticket:retail``) is bound as associated data. The key id (:func:`key_id`) names the
    key that sealed the value without revealing anything of it, so that values sealed before a key
    rotation still open: the box seals under its current key and opens under the current key or any of
    the ``previous`` ones. Values of the older ``v1.`` form carry no key id and are tried under each key.
    """

    _V1 = "v1."
    _V2 = "v2."

    def __init__(
        self,
        key: bytes,
        *,
        previous: Sequence[bytes] = (),
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(key) != 32 or any(len(old) != 32 for old in previous):
            raise ConfigError("the secret key must be 32 bytes")
        self._key = key
        # The current key first: most values are sealed under it, and v1 values are tried in this order.
        self._keys = [(key_id(k), k) for k in dict.fromkeys([key, *previous])]
        self._prefix = f"{self._V2}{self._keys[0][0]}."
        self._random_bytes = random_bytes

    @classmethod
    def from_base64(
        cls,
        value: str,
        *,
        previous: str = "",
        name: str = "GATEWAY_SECRET_KEY",
        previous_name: str = "GATEWAY_PREVIOUS_SECRET_KEYS",
    ) -> SecretBox:
        """Build from the base64 forms kept in the environment: the current key in ``value``, keys that
        only open in ``previous`` (comma-separated). Errors name the variable, never the value."""
        olds = [part.strip() for part in previous.split(",") if part.strip()]
        return cls(
            _decode_key(value, name),
            previous=[_decode_key(old, f"{previous_name}[{i}]") for i, old in enumerate(olds)],
        )

    def derive(self, purpose: str) -> list[bytes]:
        """Keys for another use than sealing (signing invites, say), the current first, then one per
        previous key: HMAC-SHA256 of ``purpose`` under each, so no other use ever holds a sealing key."""
        label = b"gateway derived key v1:" + purpose.encode()
        return [hmac.new(key, label, hashlib.sha256).digest() for _, key in self._keys]

    @property
    def key_id(self) -> str:
        """The id of the current key, as sealed values carry it."""
        return self._keys[0][0]

    def looks_random(self) -> bool:
        """Whether the current key could have come from a random source: 32 random bytes hold about 30
        distinct values, a placeholder (zeros, one repeated letter, a short phrase) far fewer."""
        return len(set(self._key)) >= 16

    def is_current(self, sealed: str) -> bool:
        """Whether ``sealed`` is of the current form under the current key (nothing to re-seal).

        Only the prefix is read: whether the value opens is for :meth:`open` to say."""
        return sealed.startswith(self._prefix)

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt and authenticate ``plaintext`` under the current key, bound to ``context``."""
        nonce = self._random_bytes(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(context.encode())
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
        return self._prefix + base64.urlsafe_b64encode(nonce + ciphertext + tag).decode()

    def open(self, sealed: str, *, context: str) -> str:
        """Decrypt a value made by :meth:`seal` with the same ``context`` under any key this box holds;
        SealedSecretError otherwise."""
        if sealed.startswith(self._V2):
            kid, dot, body = sealed[len(self._V2) :].partition(".")
            # Ids are 32 bits: two keys may share one, so every key that has it is tried.
            keys = [key for id_, key in self._keys if id_ == kid]
            if not dot or not keys:
                raise SealedSecretError(f"sealed value for {context} is under a key this box does not hold")
        elif sealed.startswith(self._V1):
            keys, body = [key for _, key in self._keys], sealed[len(self._V1) :]
        else:
            raise SealedSecretError("unknown sealed-value format")
        try:
            raw = base64.urlsafe_b64decode(body)
        except (binascii.Error, ValueError) as exc:
            raise SealedSecretError("sealed value is not valid base64") from exc
        if len(raw) < 28:
            raise SealedSecretError("sealed value is too short")
        for key in keys:
            cipher = AES.new(key, AES.MODE_GCM, nonce=raw[:12])
            cipher.update(context.encode())
            try:
                return cipher.decrypt_and_verify(raw[12:-16], raw[-16:]).decode()
            except ValueError:
                continue
        raise SealedSecretError(f"sealed value for {context} does not open with the keys this box holds")


def webhook_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key of a subscription's ``secret``: the bytes after ``whsec_`` decoded
    from base64 for a secret so written; the UTF-8 bytes of the secret otherwise, so secrets given before
    Standard Webhooks keep working (their app verifies with ``whsec_`` + base64 of those bytes).

    Raises ValueError, quoting no part of the secret, when a ``whsec_`` secret is not base64 or is empty.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return secret.encode()
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        # Padding optional, as the Standard Webhooks libraries take it; no other character is skipped.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("after whsec_ must come the key in base64 (A-Z a-z 0-9 + /)") from None
    if not key:
        raise ValueError("after whsec_ must come the key in base64, at least one byte")
    return key


def key_id(key: bytes) -> str:
    """A short public name of an at-rest key: the first 8 hex digits of its SHA-256.

    32 bits of a hash of 256 random bits say nothing usable of the key; they only tell keys apart."""
    return hashlib.sha256(key).hexdigest()[:8]


def _decode_key(value: str, name: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name} is not valid base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{name} must decode to 32 bytes, got {len(key)}")
    return key
