"""Pushes to authorization event URLs and message URLs, encrypted and signed exactly as WeChat sends
them (protocol §1–2).

One httpx client, opened by the app's lifespan, carries every push. An event push is delivered when the
receiver answers 200 with the body ``success``; each outcome is kept in a log that the control API shows.
A user message is relayed as WeChat relays it: when no answer comes within ``message_timeout_s`` (or the
receiver cannot be reached) the same message is POSTed again, freshly signed, ``message_attempts`` times
in all. Its sender gets every attempt and the decisive answer, a passive reply left encrypted; the relays
are kept in a second log.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec

from gateway.crypto import MessageCrypto
from gateway.simulator.config import SimComponent
from gateway.simulator.state import Event, UserMessage, World
from gateway.xml import build_xml

__all__ = ["MessagePushed", "PushRecord", "Pusher", "RelayAttempt", "envelope", "message_envelope"]

logger = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 5.0  # WeChat gives up on a receiver after 5 seconds
LOG_SIZE = 1000  # entries of each log: pushes, relays
BODY_KEPT = 500  # characters of the receiver's answer kept in the push log
REPLY_KEPT = 64 * 1024  # characters of a passive reply kept: real ones are a few KiB; bounds the relay log


class PushRecord(msgspec.Struct):
    """One push and how the receiver answered (``status`` None: it could not be reached)."""

    id: int
    component_appid: str
    info_type: str
    authorizer_appid: str | None
    url: str | None
    at: int
    status: int | None
    body: str | None
    error: str | None
    delivered: bool


class RelayAttempt(msgspec.Struct):
    """One POST of a user message and its answer (``status`` None: none came in time, see ``error``)."""

    status: int | None
    body: str | None
    error: str | None
    elapsed_ms: float


class MessagePushed(msgspec.Struct):
    """A user message as sent (its decrypted elements, the same in every attempt) and the receiver's
    decisive answer: the last attempt's (``status`` None: no attempt was answered). ``attempts`` lists
    every POST in order; it is empty when the component has no message URL."""

    id: int
    component_appid: str
    authorizer_appid: str
    message: dict[str, str | int | dict[str, str | int]]
    url: str | None
    status: int | None
    body: str | None
    error: str | None
    attempts: list[RelayAttempt]


def envelope(component: SimComponent, event: Event, timestamp: str, nonce: str) -> tuple[dict[str, str], str]:
    """The query parameters and XML body of a push of ``event`` to ``component``."""
    return _signed(component, build_xml(event.payload()), "AppId", component.appid, timestamp, nonce)


def message_envelope(
    component: SimComponent, message: UserMessage, timestamp: str, nonce: str
) -> tuple[dict[str, str], str]:
    """The query parameters and XML body of a user message relayed to ``component``: the envelope names
    the account (``ToUserName``) instead of the component."""
    plaintext = build_xml(message.payload())
    return _signed(component, plaintext, "ToUserName", message.to_user_name, timestamp, nonce)


def _signed(
    component: SimComponent, plaintext: str, tag: str, value: str, timestamp: str, nonce: str
) -> tuple[dict[str, str], str]:
    crypto = MessageCrypto(component.token, component.encoding_aes_key, component.appid)
    encrypt = crypto.encrypt(plaintext.encode())
    plain = "".join(sorted([component.token, timestamp, nonce]))
    params = {
        "signature": hashlib.sha1(plain.encode()).hexdigest(),  # noqa: S324 - WeChat's URL signature
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": crypto.sign(timestamp, nonce, encrypt),
    }
    return params, build_xml({tag: value, "Encrypt": encrypt})


class Pusher:
    """Delivers events to components and keeps the log of what happened."""

    def __init__(self, world: World, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._world = world
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._log: deque[PushRecord] = deque(maxlen=LOG_SIZE)
        self._relays: deque[MessagePushed] = deque(maxlen=LOG_SIZE)
        self._push_ids = itertools.count(1)
        self._relay_ids = itertools.count(1)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Hold the one push client for the lifetime of the app."""
        async with httpx.AsyncClient(transport=self._transport, timeout=PUSH_TIMEOUT_S) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    @property
    def log(self) -> list[PushRecord]:
        """The last ``LOG_SIZE`` pushes to event URLs, oldest first."""
        return list(self._log)

    @property
    def relays(self) -> list[MessagePushed]:
        """The last ``LOG_SIZE`` user messages relayed to message URLs, oldest first."""
        return list(self._relays)

    async def push_ticket(self, appid: str) -> tuple[str, PushRecord]:
        """Issue a new component_verify_ticket and push it."""
        ticket, event = self._world.issue_ticket(appid)
        return ticket, await self.deliver(event)

    async def push_tickets(self) -> None:
        """A ticket for every component that has an event URL."""
        for appid, component in list(self._world.components.items()):
            if component.config.event_url:
                await self.push_ticket(appid)

    async def run_schedule(self, interval_s: float, push_on_start: bool) -> None:
        """The ticket pusher: at start if asked, then every ``interval_s`` (0: never)."""
        if push_on_start:
            await self.push_tickets()
        while interval_s > 0:
            await asyncio.sleep(interval_s)
            await self.push_tickets()

    async def relay(self, message: UserMessage) -> MessagePushed:
        """POST a user message to its component's message URL (``$APPID$`` replaced by the account) until
        an answer comes in time, at most ``message_attempts`` times; record the relay."""
        component = self._world.component(message.component_appid).config
        attempts: list[RelayAttempt] = []
        url = None
        if component.message_url:
            url = component.message_url.replace("$APPID$", message.authorizer_appid)
            while len(attempts) < self._world.config.message_attempts:
                attempts.append(await self._post_message(url, component, message))
                if attempts[-1].status is not None:
                    break  # WeChat retries only when no answer came: any status ends the relay
                logger.info(
                    "message to %s, attempt %d: %s",
                    message.authorizer_appid,
                    len(attempts),
                    attempts[-1].error,
                )
        last = attempts[-1] if attempts else RelayAttempt(None, None, "the component has no message_url", 0.0)
        pushed = MessagePushed(
            id=next(self._relay_ids),
            component_appid=component.appid,
            authorizer_appid=message.authorizer_appid,
            message=message.payload(),
            url=url,
            status=last.status,
            body=last.body,
            error=last.error,
            attempts=attempts,
        )
        self._relays.append(pushed)
        logger.info(
            "message %s to %s via %s: %s",
            message.fields.get("MsgType"),
            message.authorizer_appid,
            component.appid,
            last.status or last.error,
        )
        return pushed

    async def _post_message(self, url: str, component: SimComponent, message: UserMessage) -> RelayAttempt:
        """One attempt: a new timestamp, nonce and signature around the same plaintext; ``message_timeout_s``
        bounds the whole exchange (httpx's own timeouts would bound each read, not the answer)."""
        client = self._open_client()
        timeout_s = self._world.config.message_timeout_s
        timestamp = str(int(self._world.now()))
        params, xml = message_envelope(component, message, timestamp, str(secrets.randbelow(10**10)))
        status = body = error = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                response = await client.post(url, params=params, content=xml.encode(), timeout=None)
            status, body = response.status_code, response.text[:REPLY_KEPT]
        except TimeoutError:
            error = f"no answer in {timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return RelayAttempt(status, body, error, round((time.monotonic() - started) * 1000, 1))

    async def deliver(self, event: Event) -> PushRecord:
        """POST ``event`` to its component's event URL and record the outcome."""
        client = self._open_client()
        component = self._world.component(event.component_appid).config
        status = body = error = None
        if component.event_url:
            timestamp = str(int(self._world.now()))
            params, xml = envelope(component, event, timestamp, str(secrets.randbelow(10**10)))
            try:
                response = await client.post(component.event_url, params=params, content=xml.encode())
                status, body = response.status_code, response.text[:BODY_KEPT]
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = f"{type(exc).__name__}: {exc}"
        else:
            error = "the component has no event_url"
        record = PushRecord(
            id=next(self._push_ids),
            component_appid=component.appid,
            info_type=event.info_type,
            authorizer_appid=_text(event.fields.get("AuthorizerAppid")),
            url=component.event_url,
            at=event.create_time,
            status=status,
            body=body,
            error=error,
            delivered=status == 200 and body == "success",
        )
        self._log.append(record)
        logger.info(
            "push %s to %s: %s",
            event.info_type,
            component.appid,
            "delivered" if record.delivered else status or error,
        )
        return record

    def _open_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the simulator's lifespan is not running: no push client")
        return self._client


def _text(value: str | int | None) -> str | None:
    return value if isinstance(value, str) else None
