"""Forwarding over the upstream client's own network (``AiohttpTransport``), on real loopback sockets.

The proxy tests reach the simulator in-process, so the network under the app's one client is tested
here: what goes out (body length, no invented headers, the query as httpx encoded it), what comes back
(raw bytes, streamed as they arrive), keep-alive, proxies from the environment, and the httpx exceptions
the proxy maps to 502/504. The subscribers' client is the same stack (``new_webhook_client``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from gateway.delivery.webhooks import new_webhook_client
from gateway.proxy.forwarding import SpooledBody, forward
from gateway.wechat.client import AiohttpTransport, new_http_client
from tests.support.servers import serve_in_thread

JSON_GZ = gzip.compress(json.dumps({"errcode": 0, "data": "x" * 2000}).encode())
FILE_GZ = gzip.compress(bytes(range(256)) * 400)
FIRST_BYTES = b"the first bytes of a slow download, "  # far fewer than a chunk of any buffer
DISPOSITION = 'attachment; filename="素材.jpg"'.encode()
STREAM_GO_ON = threading.Event()  # the /stream answer sends its last bytes once this is set

Scope = dict[str, Any]


async def _upstream(scope: Scope, receive: Any, send: Any) -> None:
    """WeChat's stand-in: echoes requests, answers gzip, streams, stalls."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break

    async def answer(content: bytes, *headers: tuple[bytes, bytes], more: bytes | None = None) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": content, "more_body": more is not None})
        if more is not None:
            await asyncio.to_thread(STREAM_GO_ON.wait, 10)
            await send({"type": "http.response.body", "body": more})

    match urlsplit(scope["path"]).path:  # a forward proxy's target is a whole URL
        case "/echo" | "/cookie":  # /cookie also sets a cookie
            echoed = {
                "target": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
                "body": body.decode("latin-1"),
                "peer": scope["client"],
            }
            cookie = [(b"set-cookie", b"wx_session=s3cret; Path=/")] if scope["path"] == "/cookie" else []
            await answer(json.dumps(echoed).encode(), (b"content-type", b"application/json"), *cookie)
        case "/media":  # a file whose name is UTF-8 in its header, and a header sent twice
            await answer(
                b"jpeg",
                (b"content-type", b"image/jpeg"),
                (b"content-disposition", DISPOSITION),
                (b"x-twice", b"1"),
                (b"x-twice", b"2"),
            )
        case "/json-gz":
            await answer(JSON_GZ, (b"content-type", b"application/json"), (b"content-encoding", b"gzip"))
        case "/file-gz":
            await answer(FILE_GZ, (b"content-type", b"image/jpeg"), (b"content-encoding", b"gzip"))
        case "/stream":
            await answer(FIRST_BYTES, (b"content-type", b"video/mp4"), more=b"the end")
        case "/slow":
            await asyncio.sleep(1)
            await answer(b"late")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_in_thread(_upstream, http="h11") as url:
        yield url


@pytest.fixture(params=["wechat", "webhooks"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with new_http_client() if request.param == "wechat" else new_webhook_client() as http:
        assert isinstance(http._transport, AiohttpTransport)
        yield http


def _header(echoed: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echoed["headers"] if key == name]


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_spooled_body_goes_with_its_length_and_no_invented_headers(
    client: httpx.AsyncClient, upstream: str
) -> None:
    content = bytes(range(256)) * 300
    body = await SpooledBody.read(_chunks(content[:1000], content[1000:]))
    reply = await forward(client, "POST", f"{upstream}/echo", [("a", "1")], {"x-caller": "kept out"}, body)
    body.close()
    assert reply.body is not None
    echoed = json.loads(reply.body)
    assert echoed["body"].encode("latin-1") == content
    assert _header(echoed, "content-length") == [str(len(content))]
    assert _header(echoed, "transfer-encoding") == []
    assert _header(echoed, "content-type") == []  # the caller sent none; none is made up
    assert _header(echoed, "x-caller") == []


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("openid", "oABC"), ("lang", "zh_CN")],
        [("q", "a b&c=d"), ("q", "%41+"), ("empty", ""), ("名", "值/?#")],
    ],
)
async def test_the_query_reads_as_the_params_sent(
    client: httpx.AsyncClient, upstream: str, params: list[tuple[str, str]]
) -> None:
    reply = await forward(client, "GET", f"{upstream}/echo", params, {}, None)
    assert reply.body is not None
    query = json.loads(reply.body)["query"]
    assert parse_qsl(query, keep_blank_values=True) == params
    assert query.encode() == httpx.URL(f"{upstream}/echo", params=params).query  # not re-quoted by yarl


async def test_a_body_of_unknown_length_is_sent_chunked(client: httpx.AsyncClient, upstream: str) -> None:
    response = await client.post(f"{upstream}/echo", content=_chunks(b"one,", b"two"))
    echoed = response.json()
    assert echoed["body"] == "one,two"
    assert _header(echoed, "transfer-encoding") == ["chunked"]


async def test_small_gzip_json_is_read_decoded_and_files_pass_raw(
    client: httpx.AsyncClient, upstream: str
) -> None:
    small = await forward(client, "GET", f"{upstream}/json-gz", [], {}, None)
    assert small.body is not None
    assert json.loads(small.body)["errcode"] == 0
    assert "content-encoding" not in {name.lower() for name in small.headers}
    large = await forward(client, "GET", f"{upstream}/file-gz", [], {"accept-encoding": "gzip"}, None)
    assert large.body is None
    assert large.headers["content-encoding"] == "gzip"
    assert b"".join([chunk async for chunk in large.stream()]) == FILE_GZ  # the bytes as WeChat sent them


async def test_no_cookie_of_an_answer_rides_on_a_later_call(client: httpx.AsyncClient, upstream: str) -> None:
    # The client serves every caller: WeChat's Set-Cookie goes to the caller of that call, and no further.
    first = await forward(client, "GET", f"{upstream}/cookie", [], {}, None)
    assert first.headers["set-cookie"] == "wx_session=s3cret; Path=/"
    second = await forward(client, "GET", f"{upstream}/cookie", [], {}, None)
    assert second.body is not None
    assert _header(json.loads(second.body), "cookie") == []
    assert not client.cookies


async def test_headers_pass_on_as_the_bytes_sent(client: httpx.AsyncClient, upstream: str) -> None:
    reply = await forward(client, "GET", f"{upstream}/media", [], {}, None)
    await reply.close()
    # Litestar writes header values as latin-1: these are the very bytes WeChat sent.
    assert reply.headers["content-disposition"].encode("latin-1") == DISPOSITION
    assert reply.headers["x-twice"] == "1, 2"


async def test_an_answer_streams_as_it_arrives(client: httpx.AsyncClient, upstream: str) -> None:
    STREAM_GO_ON.clear()
    reply = await asyncio.wait_for(forward(client, "GET", f"{upstream}/stream", [], {}, None), 5)
    chunks = reply.stream()
    first = await asyncio.wait_for(anext(chunks), 5)  # while the upstream still holds the end
    STREAM_GO_ON.set()
    rest = b"".join([chunk async for chunk in chunks])
    assert first and FIRST_BYTES.startswith(first)
    assert first + rest == FIRST_BYTES + b"the end"


async def test_forward_goes_to_aiohttp_with_the_headers_httpx_would_send(
    client: httpx.AsyncClient, upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    through_httpx = (await client.get(f"{upstream}/echo", headers={"accept-language": "zh_CN"})).json()

    async def no_httpx(*args: Any, **kwargs: Any) -> httpx.Response:
        raise AssertionError("forward went through httpx's client")

    monkeypatch.setattr(httpx.AsyncClient, "send", no_httpx)
    reply = await forward(client, "GET", f"{upstream}/echo", [], {"accept-language": "zh_CN"}, None)
    assert reply.body is not None
    direct = json.loads(reply.body)
    assert sorted(map(tuple, direct["headers"])) == sorted(map(tuple, through_httpx["headers"]))
    assert ["user-agent", "group-gateway"] in direct["headers"]


async def test_calls_keep_one_connection_alive(client: httpx.AsyncClient, upstream: str) -> None:
    peers = {tuple((await client.get(f"{upstream}/echo")).json()["peer"]) for _ in range(3)}
    assert len(peers) == 1


async def test_proxies_from_the_environment_apply(upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", upstream)  # the echo answers as a forward proxy would receive it
    async with new_http_client() as http:
        echoed = (await http.get("http://api.weixin.invalid/echo")).json()
        forwarded = await forward(http, "GET", "http://api.weixin.invalid/echo", [("a", "1")], {}, None)
    assert echoed["target"] == "http://api.weixin.invalid/echo"
    assert forwarded.body is not None
    through_proxy = json.loads(forwarded.body)
    assert (through_proxy["target"], through_proxy["query"]) == ("http://api.weixin.invalid/echo", "a=1")
    async with new_webhook_client() as http:  # subscribers are internal: no proxy, however configured
        with pytest.raises(httpx.ConnectError):
            await http.get("http://api.weixin.invalid/echo")


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that reads the request and closes the connection without an answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


async def test_failures_keep_httpx_exception_types(
    client: httpx.AsyncClient, upstream: str, hangs_up: str
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{upstream}/slow", timeout=0.2)
    refused = socket.create_server(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()
    with pytest.raises(httpx.ConnectError):  # not a timeout: the proxy answers 502, not 504
        await client.get(f"http://127.0.0.1:{port}/")
    with pytest.raises(httpx.TransportError) as dropped:
        await client.get(hangs_up)
    assert not isinstance(dropped.value, httpx.TimeoutException)
    # forward() reaches aiohttp directly, with the same exceptions
    with pytest.raises(httpx.ConnectError):
        await forward(client, "GET", f"http://127.0.0.1:{port}/", [], {}, None)
    with pytest.raises(httpx.TransportError) as dropped:
        await forward(client, "GET", hangs_up, [], {}, None)
    assert not isinstance(dropped.value, httpx.TimeoutException)
