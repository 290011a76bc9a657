"""Forwarding one call to WeChat and its answer back, byte for byte, without holding bodies whole.

The request body is spooled (in memory up to 1 MiB, then to a temporary file) so the call can be sent
again once after a stale-token answer; the response is streamed back unless it is a small JSON answer
that the proxy must read to see its ``errcode``.

Every proxied call passes here, so over the app's own network (``AiohttpTransport``) a call goes to
aiohttp directly, with the headers, timeouts and proxy the client would give it: httpx's request and
response objects cost twice what aiohttp's own work does (docs/benchmarks.md, "The client stack"). A
transport put in its place (the tests' in-process simulator) is reached through httpx's client.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import IO, Protocol

import httpx
import msgspec
import yarl

from gateway.wechat.client import AiohttpBody, AiohttpClient, AiohttpTransport

__all__ = ["Reply", "SpooledBody", "errcode_of", "forward"]

SPOOL_IN_MEMORY = 1024 * 1024
CHUNK = 64 * 1024
JSON_PEEK_LIMIT = 256 * 1024  # WeChat's JSON answers are small; files are never read whole

# Request headers that describe the body or the client's preferences; everything else (the caller's
# credentials, cookies, host, hop-by-hop headers) stays here.
_FORWARDED_REQUEST = frozenset({"content-type", "accept", "accept-encoding", "accept-language", "user-agent"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "date",
        "server",
    }
)


class SpooledBody:
    """A request body read once from the client and replayable for a retry."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self.size = size

    @classmethod
    async def read(cls, stream: AsyncIterator[bytes]) -> SpooledBody:
        """Spool everything ``stream`` yields."""
        file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by close()
        size = 0
        try:
            async for chunk in stream:
                file.write(chunk)
                size += len(chunk)
        except BaseException:
            file.close()  # a body past the route's cap (413) or a client gone: drop what was spooled now
            raise
        return cls(file, size)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from its start, in chunks."""
        self._file.seek(0)
        while chunk := self._file.read(CHUNK):
            yield chunk

    def close(self) -> None:
        """Release the memory or the temporary file."""
        self._file.close()


class _Body(Protocol):
    """An answer's open body: ``httpx.Response`` or ``AiohttpBody``."""

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Reply(msgspec.Struct):
    """WeChat's answer: status, headers to pass on, and either the body read whole or the open stream."""

    status: int
    headers: dict[str, str]
    body: bytes | None
    response: _Body | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it comes, closing the upstream response at the end."""
        if self.body is not None:
            yield self.body
            return
        assert self.response is not None
        try:
            # Each read as it arrives: with a chunk size, httpx would hold bytes back until it has
            # that many, and a slow download's first bytes would wait for the next 64 KiB.
            async for chunk in self.response.aiter_raw():
                yield chunk
        finally:
            await self.response.aclose()

    async def close(self) -> None:
        """Close the upstream response if it was not consumed."""
        if self.response is not None:
            await self.response.aclose()


def request_headers(headers: Mapping[str, str], body: SpooledBody | None) -> dict[str, str]:
    """The headers sent upstream: only those that describe the body or the accepted answer."""
    forwarded = {name: value for name, value in headers.items() if name.lower() in _FORWARDED_REQUEST}
    if body is not None and body.size:
        forwarded["content-length"] = str(body.size)
    return forwarded


async def forward(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    params: list[tuple[str, str]],
    headers: Mapping[str, str],
    body: SpooledBody | None,
) -> Reply:
    """Send one call and return WeChat's answer, reading it whole only when it is small JSON."""
    # The query encoded as httpx encodes ``params``, into one URL: aiohttp takes it unparsed, and httpx
    # (on its own path) parses it once rather than the base URL and then all of it again.
    target = f"{url}?{httpx.QueryParams(tuple(params))}" if params else url
    sent = request_headers(headers, body)
    content = body.chunks() if body is not None and body.size else None
    transport = http.transport_for(target) if isinstance(http, AiohttpClient) else None
    if isinstance(transport, AiohttpTransport) and _PLAIN_URL.fullmatch(target):
        return await _over_aiohttp(http, transport, method, target, sent, content)
    request = http.build_request(method, target, headers=sent, content=content)
    response = await http.send(request, stream=True)
    passed = _passed_headers(response.headers.raw)
    if _is_small_json(passed):
        try:
            read = await response.aread()  # decoded: its encoding and length no longer apply
        finally:
            await response.aclose()
        passed.pop("content-encoding", None)
        passed.pop("content-length", None)
        return Reply(response.status_code, passed, read)
    return Reply(response.status_code, passed, None, response)


# Already encoded as a URL (the route checks the path, httpx encodes the query): yarl takes it as it is.
_PLAIN_URL = re.compile(r"https?://[\x21-\x7e]+")


async def _over_aiohttp(
    http: httpx.AsyncClient,
    transport: AiohttpTransport,
    method: str,
    target: str,
    sent: dict[str, str],
    content: AsyncIterator[bytes] | None,
) -> Reply:
    """``forward`` straight to aiohttp: the client's own headers under the forwarded ones, its timeouts."""
    merged = {name.lower(): value for name, value in http.headers.items()}
    merged.update((name.lower(), value) for name, value in sent.items())
    response = await transport.exchange(
        method, yarl.URL(target, encoded=True), list(merged.items()), content, http.timeout.as_dict()
    )
    answer = AiohttpBody(response)
    passed = _passed_headers(response.raw_headers)
    if not _is_small_json(passed):
        return Reply(response.status, passed, None, answer)
    try:
        read = await answer.aread()
    finally:
        await answer.aclose()
    if "content-encoding" in passed:  # decoded by httpx's own decoders, as ``aread`` decodes
        read = httpx.Response(response.status, headers=response.raw_headers, content=read).content
    passed.pop("content-encoding", None)
    passed.pop("content-length", None)
    return Reply(response.status, passed, read)


def _passed_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """WeChat's headers to pass on, named in lower case, repeated ones joined by ", " (as httpx joins
    them). Values are read as latin-1, as the response writes them back, so the caller gets the bytes
    WeChat sent; httpx's own decoding picks UTF-8 where it can, which cannot be written back."""
    passed: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        if name in _HOP_BY_HOP:
            continue
        value = raw_value.decode("latin-1")
        passed[name] = f"{passed[name]}, {value}" if name in passed else value
    return passed


def _is_small_json(headers: Mapping[str, str]) -> bool:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "text/plain", "text/json"):
        return False
    length = headers.get("content-length")
    return length is None or (length.isdigit() and int(length) <= JSON_PEEK_LIMIT)


class _Errcode(msgspec.Struct):
    errcode: int = 0


def errcode_of(body: bytes | None) -> int | None:
    """The ``errcode`` of a JSON answer (0 when absent), or None when the body is not JSON."""
    if body is None:
        return None
    try:
        return msgspec.json.decode(body, type=_Errcode).errcode
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
