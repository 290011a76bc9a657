"""A stand-in for an internal app subscribed to the gateway's forwarding (SPEC §10): a real Litestar app that
checks each delivery's signature, records every request, and answers as the test tells it to.

    subscriber = Subscriber("crm-webhook-secret")
    httpx.ASGITransport(app=subscriber.app)                # in-process
    with served_subscriber("crm-webhook-secret") as (subscriber, base_url): ...   # on a loopback socket

It answers on any path. The knobs are read on every request, so a test may turn them while the server
runs: ``status`` (default 200), ``delay_s`` (a wait before answering) and ``reply`` (a JSON-able value sent
as the body, such as ``{"reply": {"msgtype": "text", "content": "hi"}}``; raw bytes sent as they are, still
labelled JSON, to play a garbage answer; None: an empty body). A request whose signature does not verify
is recorded and answered 401, as a real receiver would answer it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, post

from tests.support.servers import serve_in_thread

__all__ = ["Delivery", "Subscriber", "served_subscriber", "sign"]

POLL_S = 0.01


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Gateway-Signature`` of ``body`` sent at ``timestamp``: ``sha256=`` and the hex HMAC-SHA256
    of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class Delivery:
    """One request as it arrived, and the status it was answered (before any ``delay_s``)."""

    path: str
    delivery_id: str | None  # X-Gateway-Delivery
    timestamp: str | None  # X-Gateway-Timestamp
    headers: dict[str, str]  # names in lower case
    body: bytes
    payload: Any  # the parsed JSON body; None when it is not JSON
    signature_ok: bool
    status: int
    arrived_at: float  # Unix seconds


class Subscriber:
    """The receiving app (``app``), what it received (``received``, in arrival order) and its knobs."""

    def __init__(self, secret: str, *, status: int = 200, delay_s: float = 0.0, reply: Any = None) -> None:
        self.secret = secret
        self.status = status
        self.delay_s = delay_s
        self.reply = reply
        self.received: list[Delivery] = []  # appended by the server's thread when served on a socket
        self.app = self._build_app()

    @property
    def delivered_ids(self) -> list[str]:
        """The ``X-Gateway-Delivery`` of every validly signed request answered 2xx, in arrival order;
        repeats are kept (delivery is at least once). An answer delayed past the gateway's timeout is
        counted here though the gateway saw none."""
        return [
            d.delivery_id
            for d in self.received
            if d.signature_ok and 200 <= d.status < 300 and d.delivery_id is not None
        ]

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Delivery]:
        """The requests received, once there are at least ``count``; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return list(self.received)
            await asyncio.sleep(POLL_S)  # polled: the server may run in another thread and loop
        if len(self.received) >= count:
            return list(self.received)
        raise AssertionError(f"expected {count} requests in {timeout_s} s, got {len(self.received)}")

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> bool:
        """Whether ``signature`` is the one ``sign`` gives for ``body`` at ``timestamp``, compared in
        constant time."""
        if timestamp is None or signature is None:
            return False
        return hmac.compare_digest(sign(self.secret, timestamp, body).encode(), signature.encode())

    def _build_app(self) -> Litestar:
        @post(["/", "/{path:path}"], media_type=MediaType.JSON)
        async def receive(request: Request[Any, Any, Any]) -> Response[bytes]:
            body = await request.body()
            timestamp = request.headers.get("x-gateway-timestamp")
            signature_ok = self.verify(timestamp, request.headers.get("x-gateway-signature"), body)
            status, reply = (self.status, self.reply) if signature_ok else (401, {"error": "bad signature"})
            self.received.append(
                Delivery(
                    path=request.url.path,
                    delivery_id=request.headers.get("x-gateway-delivery"),
                    timestamp=timestamp,
                    headers=dict(request.headers),
                    body=body,
                    payload=_json(body),
                    signature_ok=signature_ok,
                    status=status,
                    arrived_at=time.time(),
                )
            )
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            return Response(_content(reply), status_code=status, media_type=MediaType.JSON)

        return Litestar([receive], openapi_config=None, logging_config=None)


def _content(reply: Any) -> bytes:
    if reply is None:
        return b""
    return reply if isinstance(reply, bytes) else msgspec.json.encode(reply)


def _json(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


@contextmanager
def served_subscriber(
    secret: str, *, status: int = 200, delay_s: float = 0.0, reply: Any = None
) -> Iterator[tuple[Subscriber, str]]:
    """A ``Subscriber`` under uvicorn on a loopback port; yields it and its base URL."""
    subscriber = Subscriber(secret, status=status, delay_s=delay_s, reply=reply)
    with serve_in_thread(subscriber.app) as base_url:
        yield subscriber, base_url
