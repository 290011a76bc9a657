"""The message-and-event URL (消息与事件接收URL, ``/$APPID$``): user messages and events of every authorizer.

A push is verified exactly as on the authorization event URL (``gateway.callbacks.pushes``), decrypted with
the
component's token, key and appid, and parsed; any refusal is a `Refused` naming the fault, and nothing is
handled. The same signed push again (a replay: WeChat signs each of its retries anew) is answered
``success`` and not handled twice. What to answer is the ``MessageHandler``'s decision — the one seam
where messages leave this module — and this service turns it into WeChat's answer:

    no reply                 ``success``
    Reply.text(content)      a passive reply, encrypted and signed (protocol §1)
    Reply.empty(work)        an empty body at once; ``work`` runs once WeChat has its answer
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.callbacks.pushes import decrypt_push, platform_crypto, push_parameters, read_envelope
from gateway.errors import (
    PlatformUnknown,
    PushAppIdMismatch,
    PushMessageInvalid,
    PushParameterInvalid,
    XmlRejected,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.xml import UserMessage, XmlValue, build_xml, is_appid, parse_user_message

__all__ = ["Answer", "HandlerChain", "MessageHandler", "MessageService", "Reply"]

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Reply:
    """A handler's answer: a passive reply message (its ``MsgType`` and fields, the addressing added by
    the service), or none at all; ``later`` runs after WeChat has the answer."""

    message: dict[str, XmlValue] | None = None
    later: Work | None = None

    @classmethod
    def text(cls, content: str) -> Reply:
        """A passive text reply."""
        return cls(message={"MsgType": "text", "Content": content})

    @classmethod
    def empty(cls, later: Work) -> Reply:
        """No passive reply: an empty body at once (WeChat's "not replying now"), then ``later``."""
        return cls(later=later)


class MessageHandler(Protocol):
    """Decides what a verified user message is answered with; None means plain ``success``."""

    async def handle(self, platform_id: str, authorizer_appid: str, message: UserMessage) -> Reply | None:
        """Answer ``message``, sent to ``authorizer_appid`` and relayed to ``platform_id``."""
        ...


class HandlerChain:
    """Handlers asked in turn; the first that answers (not None) decides."""

    def __init__(self, *handlers: MessageHandler) -> None:
        self._handlers = handlers

    async def handle(self, platform_id: str, authorizer_appid: str, message: UserMessage) -> Reply | None:
        """The first handler's answer to ``message``, or None when none answers."""
        for handler in self._handlers:
            reply = await handler.handle(platform_id, authorizer_appid, message)
            if reply is not None:
                return reply
        return None


@dataclass(frozen=True)
class Answer:
    """What WeChat is answered (``body`` of ``media_type``), and the work to run after."""

    body: str
    media_type: str
    later: Work | None = None


_SUCCESS = Answer("success", "text/plain")


class _RecentPushes:
    """Pushes handled while their ``timestamp`` is within the window, by platform and ``msg_signature``.

    The inbox's store-wide dedup (by ``MsgId``) already stops a replay reaching subscribers twice; this
    also covers what comes before it (the release test's API reply) and a replay to another ``$APPID$``
    (the URL is not signed). In-process and bounded: at most ``limit`` entries, the oldest forgotten first.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._limit = limit

    def claim(self, key: tuple[str, str], expires_at: float, now: float) -> bool:
        """Whether ``key`` is new (and from now on taken until ``expires_at``)."""
        while self._expiry:
            oldest, at = next(iter(self._expiry.items()))
            if at > now and len(self._expiry) < self._limit:
                break
            del self._expiry[oldest]
        if key in self._expiry:
            return False
        self._expiry[key] = expires_at
        return True

    def release(self, key: tuple[str, str]) -> None:
        """Forget ``key``: its handling failed, so the same push may be tried again."""
        self._expiry.pop(key, None)


class MessageService(ReadsRegistry):
    """Receives the message-and-event pushes of the platforms of the registry in force.

    A push whose ``timestamp`` is more than ``window_s`` seconds from ``clock()`` is refused. ``clock``
    also stamps passive replies (``CreateTime``, ``TimeStamp``); ``nonce`` makes each reply's nonce.
    """

    def __init__(
        self,
        registry: LiveRegistry,
        handler: MessageHandler,
        *,
        window_s: float,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: str(secrets.randbelow(10**10)),
    ) -> None:
        self._live = registry
        self._handler = handler
        self._window_s = window_s
        self._clock = clock
        self._nonce = nonce
        self._recent = _RecentPushes()

    async def receive(
        self, platform_id: str, authorizer_appid: str, query: Mapping[str, str], body: bytes
    ) -> Answer:
        """Verify, decrypt and answer one push for ``authorizer_appid`` (the ``$APPID$`` of the URL)."""
        now = self._clock()
        parameters = push_parameters(query, body, now=now, window_s=self._window_s)
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        if not is_appid(authorizer_appid):
            raise PushParameterInvalid("appid", "the appid in the URL is not an appid")
        envelope = read_envelope(body)
        if envelope.app_id is not None and envelope.app_id != platform.component_appid:
            raise PushAppIdMismatch(f"the AppId element is not platform '{platform.id}'")
        crypto = platform_crypto(platform)
        plaintext = decrypt_push(crypto, parameters, envelope.encrypt)
        try:
            message = parse_user_message(plaintext)
        except XmlRejected as exc:
            raise PushMessageInvalid(f"decrypted message refused: {exc}") from None
        if envelope.to_user_name is not None and envelope.to_user_name != message.to_user_name:
            raise PushMessageInvalid("the ToUserName of the envelope and of the message differ")
        seen = (platform.id, parameters.msg_signature)
        if not self._recent.claim(seen, int(parameters.timestamp) + self._window_s, now):
            log.info("message to %s on %s: a replay of a push already handled", authorizer_appid, platform.id)
            return _SUCCESS
        try:
            reply = await self._handler.handle(platform.id, authorizer_appid, message)
        except BaseException:
            self._recent.release(seen)
            raise
        log.info(
            "message accepted platform=%s authorizer=%s msg_type=%s reply=%s",
            platform.id,
            authorizer_appid,
            message.msg_type,
            "none" if reply is None else "passive" if reply.message is not None else "empty",
        )
        if reply is None:
            return _SUCCESS
        if reply.message is None:
            return Answer("", "text/plain", reply.later)
        now = int(self._clock())
        addressed: dict[str, XmlValue] = {
            "ToUserName": message.from_user_name,
            "FromUserName": message.to_user_name,
            "CreateTime": now,
        }
        xml = build_xml(addressed | reply.message)
        return Answer(crypto.encrypt_reply(xml.encode(), now, self._nonce()), "application/xml", reply.later)
