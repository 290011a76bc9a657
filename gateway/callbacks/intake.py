"""Intake of pushes to the authorization event URL: authenticate, decrypt, parse, record.

Nothing is stored unless every check passed; every refusal is a `Refused` naming the fault. A push seen
before (same platform, ``msg_signature`` and ``nonce``: a WeChat retry or a replay) is answered as accepted
and not processed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from gateway.callbacks.pushes import (
    MAX_PUSH_BYTES,
    decrypt_push,
    platform_crypto,
    push_parameters,
    read_envelope,
)
from gateway.errors import (
    PlatformUnknown,
    PushAppIdMismatch,
    PushEventInvalid,
    PushXmlInvalid,
    XmlRejected,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Platform
from gateway.store import Store
from gateway.xml import (
    ComponentEvent,
    ComponentVerifyTicket,
    info_type,
    is_authorization_event,
    parse_component_event,
)

__all__ = ["MAX_PUSH_BYTES", "EventIntake", "PushOutcome"]

log = logging.getLogger(__name__)


class PushOutcome:
    """What became of an accepted push: ``applied`` is False when it changed nothing (a retry or a
    replay, or a verify ticket no newer than the one stored)."""

    __slots__ = ("applied", "event", "platform_id")

    def __init__(self, platform_id: str, event: ComponentEvent, *, applied: bool) -> None:
        self.platform_id = platform_id
        self.event = event
        self.applied = applied


class EventIntake(ReadsRegistry):
    """Receives component pushes for the platforms of the registry in force.

    A push whose ``timestamp`` is more than ``window_s`` seconds from ``clock()`` is refused.
    """

    def __init__(
        self,
        registry: LiveRegistry,
        store: Store,
        *,
        window_s: float,
        clock: Callable[[], float] = time.time,
        on_authorization_event: Callable[[], None] | None = None,
    ) -> None:
        self._live = registry
        self._store = store
        self._window_s = window_s
        self._clock = clock
        self._on_authorization_event = on_authorization_event

    async def receive(self, platform_id: str | None, query: Mapping[str, str], body: bytes) -> PushOutcome:
        """Handle one push. ``platform_id`` None means the single-URL form: the envelope's AppId decides."""
        parameters = push_parameters(query, body, now=self._clock(), window_s=self._window_s)
        platform = self._registry.platform(platform_id) if platform_id is not None else None
        if platform_id is not None and platform is None:
            raise PlatformUnknown(platform_id)
        envelope = read_envelope(body)
        if platform is None:
            platform = self._platform_of_envelope(envelope.app_id)
        elif envelope.app_id is not None and envelope.app_id != platform.component_appid:
            raise PushAppIdMismatch(f"the AppId element is not platform '{platform.id}'")
        plaintext = decrypt_push(platform_crypto(platform), parameters, envelope.encrypt)
        try:
            event = parse_component_event(plaintext)
        except XmlRejected as exc:
            raise PushEventInvalid(f"decrypted message refused: {exc}") from None
        if event.app_id != platform.component_appid:
            raise PushAppIdMismatch("the decrypted AppId is not this platform's component_appid")
        applied = await self._store.record_push(
            platform.id, parameters.msg_signature, parameters.nonce, event
        )
        outcome = PushOutcome(platform.id, event, applied=applied)
        if applied and self._on_authorization_event is not None and is_authorization_event(event):
            self._on_authorization_event()
        # A verify ticket is a heartbeat (every 10 minutes per component): its receipt shows in /readyz and
        # the gateway_ticket_age_seconds gauge, and a line for each would drown the events that matter.
        log.log(
            logging.DEBUG if isinstance(event, ComponentVerifyTicket) else logging.INFO,
            "push accepted platform=%s info_type=%s applied=%s",
            platform.id,
            info_type(event),
            outcome.applied,
        )
        return outcome

    def _platform_of_envelope(self, app_id: str | None) -> Platform:
        if app_id is None:
            raise PushXmlInvalid("the AppId element is missing: it names the platform")
        platform = self._registry.platform_by_appid(app_id)
        if platform is None:
            raise PlatformUnknown(app_id, "the AppId element names no platform in the registry")
        return platform
