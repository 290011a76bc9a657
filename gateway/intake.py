"""Intake of pushes to the authorization event URL: authenticate, decrypt, parse, record.

Nothing is stored unless every check passed; every refusal is an ApiError naming the fault.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from gateway.crypto import MessageCrypto
from gateway.errors import ApiError, AppIdMismatch, CryptoError, SignatureInvalid, XmlRejected
from gateway.events import (
    ComponentEvent,
    info_type,
    is_authorization_event,
    parse_component_event,
    parse_envelope,
)
from gateway.registry import Platform, Registry
from gateway.store import Store

__all__ = ["MAX_PUSH_BYTES", "EventIntake", "PushOutcome"]

log = logging.getLogger(__name__)

MAX_PUSH_BYTES = 64 * 1024
_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_NONCE = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII; WeChat sends digits


class PushOutcome:
    """What became of an accepted push."""

    __slots__ = ("duplicate", "event", "platform_id")

    def __init__(self, platform_id: str, event: ComponentEvent, *, duplicate: bool) -> None:
        self.platform_id = platform_id
        self.event = event
        self.duplicate = duplicate


class EventIntake:
    """Receives component pushes for the platforms of one registry."""

    def __init__(
        self, registry: Registry, store: Store, *, on_authorization_event: Callable[[], None] | None = None
    ) -> None:
        self._registry = registry
        self._store = store
        self._on_authorization_event = on_authorization_event
        self._crypto = {
            p.id: MessageCrypto(p.token.reveal(), p.encoding_aes_key.reveal(), p.component_appid)
            for p in registry.platforms
        }

    async def receive(self, platform_id: str | None, query: Mapping[str, str], body: bytes) -> PushOutcome:
        """Handle one push. ``platform_id`` None means the single-URL form: the envelope's AppId decides."""
        if len(body) > MAX_PUSH_BYTES:
            raise ApiError(413, "body_too_large", f"push bodies are limited to {MAX_PUSH_BYTES} bytes")
        msg_signature, timestamp, nonce = _push_parameters(query)
        platform = self._registry.platform(platform_id) if platform_id is not None else None
        if platform_id is not None and platform is None:
            raise ApiError(404, "platform_unknown", f"no platform '{platform_id}' in the registry")
        try:
            envelope = parse_envelope(body)
        except XmlRejected as exc:
            raise ApiError(400, "invalid_xml", str(exc)) from None
        if platform is None:
            platform = self._platform_of_envelope(envelope.app_id)
        elif envelope.app_id is not None and envelope.app_id != platform.component_appid:
            raise ApiError(400, "appid_mismatch", f"the AppId element is not platform '{platform.id}'")
        crypto = self._crypto[platform.id]
        try:
            crypto.verify(msg_signature, timestamp, nonce, envelope.encrypt)
            plaintext = crypto.decrypt(envelope.encrypt)
        except SignatureInvalid:
            raise ApiError(
                403, "signature_invalid", "msg_signature does not match the Encrypt element"
            ) from None
        except AppIdMismatch:
            raise ApiError(400, "appid_mismatch", "the encrypted message is for another appid") from None
        except CryptoError as exc:
            raise ApiError(400, "decrypt_failed", f"the Encrypt element cannot be decrypted: {exc}") from None
        try:
            event = parse_component_event(plaintext)
        except XmlRejected as exc:
            raise ApiError(400, "invalid_event", f"decrypted message refused: {exc}") from None
        if event.app_id != platform.component_appid:
            raise ApiError(
                400, "appid_mismatch", "the decrypted AppId is not this platform's component_appid"
            )
        recorded = await self._store.record_push(platform.id, msg_signature, nonce, event)
        outcome = PushOutcome(platform.id, event, duplicate=not recorded)
        if recorded and self._on_authorization_event is not None and is_authorization_event(event):
            self._on_authorization_event()
        log.info(
            "push accepted platform=%s info_type=%s duplicate=%s",
            platform.id,
            info_type(event),
            outcome.duplicate,
        )
        return outcome

    def _platform_of_envelope(self, app_id: str | None) -> Platform:
        if app_id is None:
            raise ApiError(400, "invalid_xml", "the AppId element is missing: it names the platform")
        platform = self._registry.platform_by_appid(app_id)
        if platform is None:
            raise ApiError(404, "platform_unknown", "the AppId element names no platform in the registry")
        return platform


def _push_parameters(query: Mapping[str, str]) -> tuple[str, str, str]:
    for name in ("msg_signature", "timestamp", "nonce"):
        if not query.get(name):
            raise ApiError(400, "missing_parameter", f"query parameter {name} is missing")
    encrypt_type = query.get("encrypt_type", "aes")
    if encrypt_type != "aes":
        raise ApiError(400, "invalid_parameter", "encrypt_type must be aes: plaintext pushes are refused")
    msg_signature, timestamp, nonce = query["msg_signature"], query["timestamp"], query["nonce"]
    if not _SIGNATURE.fullmatch(msg_signature):
        raise ApiError(400, "invalid_parameter", "msg_signature must be 40 hexadecimal digits")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise ApiError(400, "invalid_parameter", "timestamp must be decimal digits")
    if not _NONCE.fullmatch(nonce):
        raise ApiError(400, "invalid_parameter", "nonce must be 1-64 printable ASCII characters")
    return msg_signature, timestamp, nonce
