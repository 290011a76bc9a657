"""WXBizMsgCrypt against the official vectors and against wechatpy, and sealing at rest."""

from __future__ import annotations

import base64
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st
from wechatpy.crypto import WeChatCrypto

from gateway.crypto import MessageCrypto, SecretBox, aes_key_from_encoding_key, signature
from gateway.errors import (
    AesKeyInvalid,
    AppIdMismatch,
    Base64Invalid,
    BufferInvalid,
    ConfigError,
    CryptoError,
    DecryptFailed,
    SealedSecretError,
    SignatureInvalid,
)
from gateway.xml import parse_xml

# A copy of ../shared/vectors/crypto.json (the official vectors), kept here so a lone clone has it.
VECTORS = json.loads((Path(__file__).parent / "vectors" / "crypto.json").read_text())["vectors"]
BY_ID = {v["id"]: v for v in VECTORS}

TOKEN = "spamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"


def _crypto_for(vector: dict[str, str]) -> MessageCrypto:
    appid = vector["appid"] or vector["receiveid_in_plaintext"]
    prefix = vector["random16"].encode("latin-1")
    return MessageCrypto(
        vector["token"], vector["encoding_aes_key"], appid, random_bytes=lambda n: prefix[:n]
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_every_vector_verifies_and_decrypts(vector: dict[str, str]) -> None:
    crypto = _crypto_for(vector)
    args = (vector["timestamp"], vector["nonce"], vector["encrypted_base64"])
    assert crypto.sign(*args) == vector["msg_signature"]
    crypto.verify(vector["msg_signature"], *args)
    assert crypto.decrypt(vector["encrypted_base64"]) == vector["plaintext"].encode()


def test_deterministic_encryption_vector_is_byte_exact() -> None:
    vector = BY_ID["wechatpy_work_enc"]
    assert _crypto_for(vector).encrypt(vector["plaintext"].encode()) == vector["encrypted_base64"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vectors_reencrypt_to_the_same_ciphertext(vector: dict[str, str]) -> None:
    # With the decrypted random prefix replayed, encryption must reproduce WeChat's bytes exactly.
    assert _crypto_for(vector).encrypt(vector["plaintext"].encode()) == vector["encrypted_base64"]


def test_signature_is_sha1_of_sorted_values() -> None:
    vector = BY_ID["official"]
    assert (
        signature(TOKEN, vector["timestamp"], vector["nonce"], vector["encrypted_base64"])
        == vector["msg_signature"]
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),
        lambda s: s.upper(),
        lambda s: s[:39],
        lambda s: "",
        lambda s: "é" * 40,
    ],
)
def test_verify_refuses_any_other_signature(mutate: object) -> None:
    vector = BY_ID["official"]
    crypto = _crypto_for(vector)
    with pytest.raises(SignatureInvalid) as info:
        crypto.verify(
            mutate(vector["msg_signature"]), vector["timestamp"], vector["nonce"], vector["encrypted_base64"]
        )  # type: ignore[operator]
    assert info.value.code == -40001


# --- against wechatpy, in both directions --------------------------------------------------------


def _wechatpy() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, AES_KEY, APPID)


MESSAGES = [
    "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Content><![CDATA[hello]]></Content></xml>",
    "<xml><Content><![CDATA[中文消息 ✓]]></Content></xml>",
    "<xml>" + "<A>x</A>" * 500 + "</xml>",
    "<xml></xml>",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_wechatpy_decrypts_what_we_encrypt(message: str) -> None:
    ours = MessageCrypto(TOKEN, AES_KEY, APPID)
    encrypt = ours.encrypt(message.encode())
    envelope = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    decrypted = _wechatpy().decrypt_message(
        envelope, ours.sign("1409735669", "nonce1", encrypt), "1409735669", "nonce1"
    )
    assert decrypted == message


@pytest.mark.parametrize("message", MESSAGES)
def test_we_decrypt_what_wechatpy_encrypts(message: str) -> None:
    reply = _wechatpy().encrypt_message(message, "nonce2", "1409735670")
    fields = {child.tag: child.text or "" for child in parse_xml(reply)}
    ours = MessageCrypto(TOKEN, AES_KEY, APPID)
    ours.verify(fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
    assert ours.decrypt(fields["Encrypt"]).decode() == message


@settings(max_examples=200, deadline=None)
@given(message=st.binary(max_size=4096), prefix=st.binary(min_size=16, max_size=16))
def test_round_trip_any_bytes(message: bytes, prefix: bytes) -> None:
    crypto = MessageCrypto(TOKEN, AES_KEY, APPID, random_bytes=lambda n: prefix)
    encrypt = crypto.encrypt(message)
    assert len(base64.b64decode(encrypt)) % 32 == 0
    assert crypto.decrypt(encrypt) == message


@settings(max_examples=100, deadline=None)
@given(message=st.text(max_size=2000))
def test_round_trip_against_wechatpy_any_text(message: str) -> None:
    ours = MessageCrypto(TOKEN, AES_KEY, APPID)
    wire = _wechatpy().encrypt_message(message, "n", "1")
    fields = {child.tag: child.text or "" for child in parse_xml(wire)}
    assert ours.decrypt(fields["Encrypt"]).decode() == message
    encrypt = ours.encrypt(message.encode())
    envelope = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    assert _wechatpy().decrypt_message(envelope, ours.sign("1", "n", encrypt), "1", "n") == message


def test_one_instance_decrypts_any_sequence_of_messages_and_threads() -> None:
    # decrypt reuses one CBC decryptor per thread: neither an earlier message, a failed one, nor another
    # thread's may change what the next one decrypts to.
    sender = MessageCrypto(TOKEN, AES_KEY, APPID)
    messages = [f"<xml><N>{n}</N>{'x' * (n * 7 % 90)}</xml>".encode() for n in range(60)]
    encrypted = [sender.encrypt(m) for m in messages]
    receiver = MessageCrypto(TOKEN, AES_KEY, APPID)
    for message, encrypt in zip(messages, encrypted, strict=True):
        assert receiver.decrypt(encrypt) == message
        with pytest.raises(CryptoError):
            receiver.decrypt(_raw_encrypt(b"\x00" * 48))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            assert list(pool.map(receiver.decrypt, encrypted)) == messages


# --- one clean error for each way a ciphertext can be wrong ------------------------------------


def _raw_encrypt(plain: bytes, key: bytes = aes_key_from_encoding_key(AES_KEY)) -> str:
    return base64.b64encode(AES.new(key, AES.MODE_CBC, iv=key[:16]).encrypt(plain)).decode()


@pytest.mark.parametrize(
    ("encrypt", "error", "code"),
    [
        ("not base64!!", Base64Invalid, -40010),
        ("QUJD", DecryptFailed, -40007),  # 3 bytes: not a whole AES block
        ("", DecryptFailed, -40007),
        (_raw_encrypt(b"\x00" * 32), DecryptFailed, -40007),  # pad byte 0
        (_raw_encrypt(b"\x01" * 31 + b"\x21"), DecryptFailed, -40007),  # pad byte 33 > block
        (_raw_encrypt(b"\x01" * 30 + b"\x03\x02"), DecryptFailed, -40007),  # inconsistent pad bytes
        (_raw_encrypt(b"r" * 16 + b"\x10" * 16), BufferInvalid, -40008),  # 16 bytes left: short buffer
        (_raw_encrypt(b"r" * 16 + struct.pack(">I", 999) + b"x" * 11 + b"\x01"), BufferInvalid, -40008),
    ],
    ids=["base64", "partial-block", "empty", "pad-zero", "pad-too-big", "pad-mismatch", "short", "length"],
)
def test_malformed_ciphertexts_raise_one_clean_error(
    encrypt: str, error: type[CryptoError], code: int
) -> None:
    with pytest.raises(error) as info:
        MessageCrypto(TOKEN, AES_KEY, APPID).decrypt(encrypt)
    assert info.value.code == code


def test_wrong_trailing_appid_is_refused() -> None:
    other = MessageCrypto(TOKEN, AES_KEY, "wxother0000000001")
    with pytest.raises(AppIdMismatch) as info:
        MessageCrypto(TOKEN, AES_KEY, APPID).decrypt(other.encrypt(b"<xml/>"))
    assert info.value.code == -40005


def test_wrong_key_never_passes_silently() -> None:
    encrypt = MessageCrypto(TOKEN, AES_KEY, APPID).encrypt(b"<xml>secret</xml>")
    with pytest.raises(CryptoError):
        MessageCrypto(TOKEN, "B" * 43, APPID).decrypt(encrypt)


@pytest.mark.parametrize("key", ["short", "a" * 44, "a" * 42 + "!", ""])
def test_bad_encoding_aes_key(key: str) -> None:
    with pytest.raises(AesKeyInvalid) as info:
        MessageCrypto(TOKEN, key, APPID)
    assert info.value.code == -40004
    assert key not in str(info.value) or not key


# --- sealing at rest ------------------------------------------------------------------------


def test_secret_box_round_trip_and_context_binding() -> None:
    box = SecretBox(os.urandom(32))
    sealed = box.seal("ticket@@@value", context="ticket:retail")
    assert "ticket@@@value" not in sealed
    assert box.open(sealed, context="ticket:retail") == "ticket@@@value"
    assert box.seal("ticket@@@value", context="ticket:retail") != sealed  # fresh nonce each time
    with pytest.raises(SealedSecretError):
        box.open(sealed, context="ticket:finance")
    with pytest.raises(SealedSecretError):
        SecretBox(os.urandom(32)).open(sealed, context="ticket:retail")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealedSecretError):
        box.open(tampered, context="ticket:retail")
    for garbage in ("", "v1.", "v1.!!!", "v2.abcd", "v1." + "A" * 8):
        with pytest.raises(SealedSecretError):
            box.open(garbage, context="ticket:retail")


@pytest.mark.parametrize(
    ("value", "problem"),
    [("", "32 bytes"), ("not base64 at all", "base64"), (base64.b64encode(b"x" * 16).decode(), "got 16")],
)
def test_secret_key_errors_name_the_variable_not_the_value(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        SecretBox.from_base64(value)
    assert "GATEWAY_SECRET_KEY" in str(info.value)
    assert problem in str(info.value)
    if value:
        assert value not in str(info.value)
