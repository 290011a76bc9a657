"""``gateway`` with another HTTP client stack, for the proxy benchmark's comparison.

    BENCH_STACK=httpx2 python -m tests.bench._stacks serve --config … --port …

The gateway ships one stack: httpx's API over aiohttp (``gateway.wechat.client.AiohttpClient``). The benchmark
measures others against it without a release of each:

- ``httpx``: httpx's own transport (httpcore's pool) under the same clients;
- ``httpx2``: httpx2 (the maintained httpx fork) in place of httpx everywhere in the process
  (``httpx2.alias_httpx``, before anything imports httpx), with its own transport (httpcore2's pool);
- ``aiohttp-plain``: ``/wx`` forwards through an ``aiohttp.ClientSession`` with no httpx layer above it
  (the same request and reply handling as ``gateway.proxy.forwarding.forward``);
- ``httpx-aiohttp``: the transport the gateway shipped before its own, httpx-aiohttp 0.2's
  ``AiohttpTransport`` (no longer a dependency: ``pip install 'httpx-aiohttp>=0.2,<0.3'`` to compare).

Unset, this is ``gateway`` itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

STACK = os.environ.get("BENCH_STACK", "")
STACKS = ("", "httpx", "httpx2", "aiohttp-plain", "httpx-aiohttp")

if STACK == "httpx2":
    import httpx2

    httpx2.alias_httpx()


class _Raw:
    """An aiohttp answer as ``Reply.stream`` and ``Reply.close`` use an httpx one."""

    def __init__(self, response: Any) -> None:
        self._response = response

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _aiohttp_forward() -> Any:
    import aiohttp
    import httpx
    from yarl import URL

    from gateway import forwarding

    session: aiohttp.ClientSession | None = None

    async def forward(
        http: Any,
        method: str,
        url: str,
        params: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: forwarding.SpooledBody | None,
    ) -> forwarding.Reply:
        nonlocal session
        if session is None:
            connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                connector=connector,
                skip_auto_headers=("Content-Type",),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(sock_connect=3, sock_read=10),
                headers={"User-Agent": "group-gateway"},
            )
        target = URL(f"{url}?{httpx.QueryParams(tuple(params))}" if params else url, encoded=True)
        try:
            response = await session.request(
                method,
                target,
                headers=forwarding.request_headers(headers, body),
                data=body.chunks() if body is not None and body.size else None,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        passed = forwarding._passed_headers(list(response.raw_headers))
        if forwarding._is_small_json(passed):
            try:
                content = await response.read()
            finally:
                response.release()
            passed.pop("content-length", None)  # auto_decompress is off: the encoding still applies
            return forwarding.Reply(response.status, passed, content)
        return forwarding.Reply(response.status, passed, None, _Raw(response))  # type: ignore[arg-type]

    return forward


def _httpx_aiohttp_transport(client: Any, transport: Any = None, limits: Any = None, **options: Any) -> Any:
    """httpx-aiohttp's transport as the gateway adjusted it: no Content-Type invented, no cookie jar."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    if transport is not None:
        return transport
    made = AiohttpTransport(limits=limits)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=made.limits.max_connections or 0, keepalive_timeout=made.limits.keepalive_expiry
        )
        return aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("Content-Type",), cookie_jar=aiohttp.DummyCookieJar()
        )

    made.client = session
    return made


def main() -> int:
    if STACK not in STACKS:
        raise SystemExit(f"BENCH_STACK must be one of {', '.join(repr(s) for s in STACKS)}")
    from gateway.__main__ import main as gateway_main

    if STACK in ("httpx", "httpx2"):
        import httpx

        from gateway.wechat.client import AiohttpClient

        AiohttpClient._init_transport = httpx.AsyncClient._init_transport  # type: ignore[method-assign]
        AiohttpClient._init_proxy_transport = httpx.AsyncClient._init_proxy_transport  # type: ignore[method-assign]
    if STACK == "httpx-aiohttp":
        from gateway.wechat.client import AiohttpClient

        AiohttpClient._init_transport = _httpx_aiohttp_transport  # type: ignore[method-assign]
    if STACK == "aiohttp-plain":
        import gateway.proxy.policy

        gateway.proxy.policy.forward = _aiohttp_forward()
    return gateway_main()


if __name__ == "__main__":
    sys.exit(main())
