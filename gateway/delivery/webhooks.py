"""Signed POSTs to subscribers (SPEC §10): the signatures, the headers, and one attempt's outcome.

Each delivery carries two signatures of the same bytes, so a subscriber can refuse forged and replayed
(old timestamp) deliveries alike:

- Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` (the delivery id, the same on
  every retry), ``webhook-timestamp`` and ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of
  ``id.timestamp.body``, one such entry (space-separated) for the current secret and for each previous
  secret of a rotation. The key is :func:`standard_key` of the secret
  (``gateway.crypto.webhook_key``).
- the gateway's first headers, deprecated (docs/receiving-messages.md says until when):
  ``X-Gateway-Signature: sha256=`` + hex HMAC-SHA256 of ``timestamp + "." + body`` under the current
  secret's UTF-8 bytes, beside ``X-Gateway-Delivery`` and ``X-Gateway-Timestamp``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

import httpx
import msgspec

from gateway.crypto import WEBHOOK_SECRET_PREFIX as STANDARD_SECRET_PREFIX
from gateway.crypto import webhook_key as standard_key
from gateway.wechat.client import AiohttpClient
from gateway.wechat.log_redaction import redact_httpx_queries

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "STANDARD_ID_HEADER",
    "STANDARD_SECRET_PREFIX",
    "STANDARD_SIGNATURE_HEADER",
    "STANDARD_TIMESTAMP_HEADER",
    "TIMESTAMP_HEADER",
    "Outcome",
    "WebhookSender",
    "new_webhook_client",
    "sign",
    "sign_standard",
    "standard_key",
    "standard_secret",
]

# Deprecated: sent beside the Standard Webhooks headers until their removal (docs/receiving-messages.md).
DELIVERY_HEADER = "X-Gateway-Delivery"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
MAX_ANSWER_BYTES = 64 * 1024  # a passive reply is small; more is not read


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value of ``body`` sent at ``timestamp`` (deprecated header)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_secret(secret: str) -> str:
    """``secret`` as the Standard Webhooks libraries take it (``whsec_`` + padded base64 of its key): a
    ``whsec_`` secret as written (padding added if it had none), a plain secret converted."""
    return STANDARD_SECRET_PREFIX + base64.b64encode(standard_key(secret)).decode()


def sign_standard(secrets: Sequence[str], delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` under each of
    ``secrets`` in turn, space-separated (several during a rotation; a receiver takes any match)."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(standard_key(s), signed, hashlib.sha256).digest()).decode()
        for s in dict.fromkeys(secrets)
    )


class Outcome(msgspec.Struct, frozen=True):
    """How one attempt went: the subscriber's status and (start of its) answer, or why there was none."""

    status: int | None
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the subscriber took the delivery (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """A short account for logs and the deliveries list; never the body."""
        return self.error if self.error is not None else f"HTTP {self.status}"


def new_webhook_client() -> httpx.AsyncClient:
    """The client for subscribers, apart from WeChat's: internal hosts, their own pool and limits, on
    the same stack as WeChat's (``AiohttpClient``: httpx's API over aiohttp, no cookie jar).

    Proxies from the environment are ignored: subscribers are internal, and an egress proxy set up for
    WeChat must not see their traffic.
    """
    redact_httpx_queries()  # a subscriber's URL may carry its own credential
    return AiohttpClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(None),  # each send bounds its whole exchange instead
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": "group-gateway"},
    )


class WebhookSender:
    """Sends one delivery body to one URL, signed, within a timeout."""

    def __init__(self, http: httpx.AsyncClient, *, clock: Callable[[], float] = time.time) -> None:
        self._http = http
        self._clock = clock

    async def send(
        self,
        url: str,
        secret: str,
        delivery_id: str,
        body: bytes,
        timeout_s: float,
        *,
        previous_secrets: Sequence[str] = (),
    ) -> Outcome:
        """POST ``body`` to ``url`` signed with ``secret`` (and, in ``webhook-signature`` only, with each of
        ``previous_secrets``); the outcome, never an exception for the subscriber's faults."""
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            STANDARD_ID_HEADER: delivery_id,
            STANDARD_TIMESTAMP_HEADER: timestamp,
            STANDARD_SIGNATURE_HEADER: sign_standard(
                [secret, *previous_secrets], delivery_id, timestamp, body
            ),
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        try:
            # The whole exchange is bounded, not each read: a subscriber trickling bytes is no answer.
            async with (
                asyncio.timeout(timeout_s),
                self._http.stream("POST", url, content=body, headers=headers) as response,
            ):
                answer = bytearray()
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:
                        break
                return Outcome(response.status_code, bytes(answer[:MAX_ANSWER_BYTES]))
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(None, error=f"no answer within {timeout_s:g} s")
        except httpx.ConnectError:
            return Outcome(None, error="connection refused or host unreachable")
        except httpx.HTTPError as exc:
            return Outcome(None, error=f"{type(exc).__name__}: the exchange failed")
