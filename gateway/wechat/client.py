"""The upstream client: WeChat's component APIs over the app's one pooled httpx client.

Every answer is decoded into a Struct; a non-zero ``errcode`` raises UpstreamError. Transient faults —
``-1``, timeouts, connection errors, HTTP 5xx, malformed JSON — are retried a bounded number of times
with jittered exponential backoff, then raise UpstreamUnavailable. A call that changes state at WeChat
(``SENT_ONCE``) is sent once: a fault after sending raises OutcomeUnknown. Every attempt goes through the
breaker of its (platform, API family) (``gateway.wechat.breaker``): after repeated faults calls fail fast with
CircuitOpen instead of reaching WeChat. Calls that carry a token are made through a `BoundClient`, the
client bound to a `Credential` (an authorizer's or a component's token, renewable): it puts the token in,
and renews it and resends once when WeChat calls it stale. Nothing here touches stored state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import aiohttp
import httpx
import msgspec
import yarl

from gateway.errors import CircuitOpen, OutcomeUnknown, UpstreamError, UpstreamUnavailable
from gateway.wechat.breaker import BreakerKey, BreakerState, UpstreamBreakers, family_of
from gateway.wechat.log_redaction import redact_httpx_queries

__all__ = [
    "SENT_ONCE",
    "STALE_TOKEN_ERRCODES",
    "AiohttpBody",
    "AiohttpClient",
    "AiohttpTransport",
    "AuthorizationInfo",
    "AuthorizerDetails",
    "AuthorizerListItem",
    "AuthorizerProfile",
    "BoundClient",
    "CallObserver",
    "Credential",
    "FetchedToken",
    "WeChatClient",
    "bounded_calls",
    "new_http_client",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")

TRANSIENT_ERRCODES = frozenset({-1})
# WeChat calling the token a call carried invalid (40001), not the latest (40014) or expired (42001): the
# holder renews it and the call may be sent again (BoundClient).
STALE_TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
# The query parameters WeChat reads a token from; a bound call carries its credential's alone.
TOKEN_PARAMS = frozenset({"access_token", "component_access_token"})

# Calls that change state at WeChat: each can succeed there while its answer is lost (a timeout, -1, a
# 5xx, a malformed body), so it is sent ONCE and such a fault raises OutcomeUnknown for the caller to
# read the outcome back (protocol §10, last row; SPEC §7). A refusal before sending (connection refused,
# an open breaker) proves nothing happened and stays UpstreamUnavailable / CircuitOpen. Not here:
# api_create_preauthcode (a lost answer leaves an unused code that lapses in 600 s; resending costs
# nothing) and the token fetches (their leases already make them once per renewal; a lost token is
# superseded by the next). message/custom/send is here although SPEC §7 does not list it: resent, it
# reaches the user twice.
SENT_ONCE = frozenset(
    {
        "cgi-bin/component/api_query_auth",  # the code is single-use: a resend after success is 61009
        "cgi-bin/open/bind",
        "cgi-bin/open/create",
        "cgi-bin/open/unbind",
        "cgi-bin/clear_quota",
        "cgi-bin/component/clear_quota/v2",  # each call spends one of ten clears a month
        "cgi-bin/component/fastregisterweapp",  # fast registration (sent through /wx/component today)
        "cgi-bin/component/fastregisterpersonalweapp",
        "cgi-bin/component/fastregisterbetaweapp",
        "cgi-bin/message/custom/send",
    }
)
_RID = re.compile(r"\s*,?\s*rid:\s*\S+\s*$")


UPSTREAM_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
RETRY_BACKOFF_S = 0.2  # the n-th retry waits up to RETRY_BACKOFF_S * 2**n (full jitter)
UPSTREAM_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30)


# A bound on WeChat calls in flight set by a caller for everything it starts (tasks copy the context):
# a catalog sync bounds its calls, not its tasks, so database work overlaps WeChat's answers.
_CALL_GATE: ContextVar[asyncio.Semaphore | None] = ContextVar("wechat_call_gate", default=None)


@contextlib.contextmanager
def bounded_calls(limit: int) -> Iterator[None]:
    """Inside this block, and in the tasks started from it, at most ``limit`` WeChat calls at a time."""
    token = _CALL_GATE.set(asyncio.Semaphore(limit))
    try:
        yield
    finally:
        _CALL_GATE.reset(token)


def new_http_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The one pooled client of the app: bounded timeouts and connection limits, keep-alive.

    ``transport`` replaces the network (tests reach the simulator in-process this way); otherwise it is
    an aiohttp session (``AiohttpTransport``). Proxies from the environment (``HTTPS_PROXY``,
    ``NO_PROXY``…) apply as httpx reads them.
    """
    redact_httpx_queries()  # WeChat takes its tokens in the query string
    return AiohttpClient(
        timeout=UPSTREAM_TIMEOUT,
        limits=UPSTREAM_LIMITS,
        transport=transport,
        headers={"User-Agent": "group-gateway"},
    )


_Cert = str | tuple[str, str] | tuple[str, str, str]  # httpx's CertTypes


@functools.lru_cache(maxsize=32)
def _client_timeout(connect: float | None, read: float | None, pool: float | None) -> aiohttp.ClientTimeout:
    # aiohttp's `connect` bounds the wait for a pooled connection and the connect together, as httpx's
    # pool timeout bounds the wait; no `total`: httpx bounds each step, not the exchange.
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


def _httpx_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError | None:
    """The httpx exception for one of aiohttp's, as httpx's own transport would raise it: a refused
    connection is a ConnectError (the proxy answers 502), a timeout before sending a ConnectTimeout (the
    call provably never left), one after it a ReadTimeout (504), a dropped connection a
    RemoteProtocolError. None for anything else."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for a pooled one
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):  # aiohttp's socket-read timeouts are TimeoutErrors too
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message, request=request)
    return None


class AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp answer's body as httpx reads it (and ``Reply`` streams it): each read as it arrives,
    still encoded, failures as httpx's exceptions."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request | None = None) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            mapped = _httpx_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (``httpx.Response.aiter_raw``'s name, for ``Reply``)."""
        return self.__aiter__()

    async def aread(self) -> bytes:
        """The whole body, still encoded."""
        try:
            return await self._response.read()
        except Exception as exc:
            mapped = _httpx_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        self._response.release()  # back to the pool when read to the end, else closed


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over one aiohttp session: httpx's API and test seams
    (``ASGITransport``, ``MockTransport``), aiohttp's connection pool and C parser.

    It keeps httpx's habits that the proxy relies on: the request goes with exactly the headers httpx
    built (no Content-Type added to a body sent without one), its URL as httpx encoded it, a streamed
    body with its Content-Length when given and chunked otherwise; the answer comes back raw (still
    gzip-compressed), read as it arrives; failures raise httpx's exceptions (``_httpx_error``). No
    cookie is kept. The session is opened on the first request, in the loop that makes it.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: _Cert | None = None,
        trust_env: bool = True,
        limits: httpx.Limits = UPSTREAM_LIMITS,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        self._ssl = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}
        if proxy is not None:
            auth = aiohttp.BasicAuth(*proxy.auth) if proxy.auth else None
            self._proxy = {"proxy": str(proxy.url), "proxy_auth": auth, "proxy_headers": proxy.headers}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=("Content-Type",),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=_client_timeout(None, None, None),
        )
        return self._session

    async def exchange(
        self,
        method: str,
        url: yarl.URL,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterable[bytes] | None,
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None = None,
        sni_hostname: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request as given and return the answer once its headers are in: the one aiohttp
        call under both this transport's httpx interface and the proxy's forwarding (``forward``).
        Failures raise httpx's exceptions (naming ``request`` when given)."""
        session = self._session or self._open()
        try:
            return await session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=False,
                timeout=_client_timeout(timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")),
                server_hostname=sni_hostname,
                **self._proxy,
            )
        except Exception as exc:
            mapped = _httpx_error(exc, request)
            if mapped is None:
                raise
            raise mapped from exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = request.headers.raw
        data: bytes | AsyncIterable[bytes] | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # streamed: aiohttp sends it chunked itself when no length is given
            data = request.stream  # type: ignore[assignment]  # an AsyncByteStream on an AsyncClient
            raw = [(name, value) for name, value in raw if name.lower() != b"transfer-encoding"]
        response = await self.exchange(
            request.method,
            # As httpx encoded it: aiohttp neither parses nor re-quotes it again.
            yarl.URL(str(request.url), encoded=True),
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw],
            data,
            request.extensions.get("timeout", {}),
            request,
            request.extensions.get("sni_hostname"),
        )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=AiohttpBody(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: ``extract_cookies`` ignores every answer's ``Set-Cookie``."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep nothing (httpx calls this on every answer)."""


class AiohttpClient(httpx.AsyncClient):
    """httpx's client over ``AiohttpTransport`` (for direct calls and through proxies alike), without
    a cookie jar: the house's one client stack, for WeChat and for subscribers.

    The gateway calls WeChat for every client and authorizer alike, so a cookie one answer set must
    never ride on another's call (``/wx`` passes ``Set-Cookie`` on to its caller, whose cookie it is).
    Reading each answer's cookies into a jar was also a twentieth of a proxied call's CPU.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()
        self._by_origin: dict[str, httpx.AsyncBaseTransport] = {}

    def transport_for(self, url: str) -> httpx.AsyncBaseTransport:
        """The transport that carries ``url`` (through a proxy, say), as ``send`` would pick it; kept
        per origin, so a call to a known origin parses no URL. The mounts are fixed at construction."""
        scheme, _, rest = url.partition("://")
        origin = f"{scheme}://{rest.partition('/')[0]}"
        found = self._by_origin.get(origin)
        if found is None:
            found = self._by_origin[origin] = self._transport_for_url(httpx.URL(origin))
        return found

    @property
    def cookies(self) -> httpx.Cookies:
        """The client's jar, which keeps no answer's cookies."""
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # httpx's CookieTypes
        if cookies:
            raise ValueError("the upstream client keeps no cookies")

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: _Cert | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = UPSTREAM_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return AiohttpTransport(verify=verify, cert=cert, trust_env=trust_env, limits=limits)

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: _Cert | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = UPSTREAM_LIMITS,
    ) -> httpx.AsyncBaseTransport:
        return AiohttpTransport(verify=verify, cert=cert, trust_env=trust_env, limits=limits, proxy=proxy)


class Credential(Protocol):
    """A token WeChat takes in the query, and its holder, who can renew it (httpx's ``Auth`` for WeChat).

    ``param`` names the query parameter (``access_token``, ``component_access_token``); ``platform_id``
    the platform whose token it is, which keys the upstream breaker."""

    platform_id: str
    param: str

    async def current(self) -> str:
        """The token to send."""
        ...

    async def renew(self, stale: str) -> str:
        """The token to send instead of ``stale``, which WeChat refused as stale; ``stale`` itself when
        it cannot be renewed (WeChat gave the same value back)."""
        ...


class _Status(msgspec.Struct):
    errcode: int = 0
    errmsg: str = ""


class FetchedToken(msgspec.Struct, frozen=True):
    """A token (or ticket) as WeChat issued it."""

    value: str
    expires_in: int
    refresh_token: str | None = None  # api_authorizer_token answers the refresh token too


class _ComponentToken(msgspec.Struct):
    component_access_token: str
    expires_in: int


class _AuthorizerToken(msgspec.Struct):
    authorizer_access_token: str
    expires_in: int
    authorizer_refresh_token: str | None = None


class _Ticket(msgspec.Struct):
    ticket: str
    expires_in: int


class _FuncScope(msgspec.Struct):
    id: int


class _FuncInfo(msgspec.Struct):
    funcscope_category: _FuncScope


class AuthorizationInfo(msgspec.Struct, frozen=True):
    """``authorization_info`` of api_query_auth."""

    authorizer_appid: str
    authorizer_refresh_token: str
    func_info: list[_FuncInfo] = []
    authorizer_access_token: str | None = None
    expires_in: int | None = None

    @property
    def func_ids(self) -> frozenset[int]:
        """The permission-set ids granted."""
        return frozenset(f.funcscope_category.id for f in self.func_info)


class _QueryAuth(msgspec.Struct):
    authorization_info: AuthorizationInfo


class AuthorizerListItem(msgspec.Struct, frozen=True):
    """One entry of api_get_authorizer_list (the refresh token may be missing in some answers)."""

    authorizer_appid: str
    refresh_token: str | None = None
    auth_time: int | None = None


class _AuthorizerList(msgspec.Struct):
    total_count: int
    items: list[AuthorizerListItem] = msgspec.field(default_factory=list, name="list")


class _PreAuthCode(msgspec.Struct):
    pre_auth_code: str
    expires_in: int


class _Id(msgspec.Struct):
    id: int = 0


class AuthorizerProfile(msgspec.Struct, frozen=True):
    """What ``api_get_authorizer_info`` says of an account (the fields the gateway keeps)."""

    nick_name: str = ""
    principal_name: str = ""
    user_name: str = ""
    head_img: str = ""
    service_type_info: _Id = msgspec.field(default_factory=_Id)
    verify_type_info: _Id = msgspec.field(default_factory=lambda: _Id(-1))
    account_status: int = 1
    mini_program_info: dict[str, Any] | None = msgspec.field(default=None, name="MiniProgramInfo")

    @property
    def kind(self) -> str:
        """``mini_program`` when WeChat describes one, else ``official_account``."""
        return "mini_program" if self.mini_program_info is not None else "official_account"


class _AuthorizerInfo(msgspec.Struct):
    authorizer_info: AuthorizerProfile


class _Grant(msgspec.Struct):
    """``authorization_info`` of api_get_authorizer_info: what the account granted the calling component."""

    authorizer_refresh_token: str | None = None
    func_info: list[_FuncInfo] = []


class _AuthorizerDetails(_AuthorizerInfo):
    authorization_info: _Grant


class AuthorizerDetails(msgspec.Struct, frozen=True):
    """api_get_authorizer_info in full: the account, and the permission sets and current refresh token
    of its authorization of the calling component."""

    profile: AuthorizerProfile
    func_ids: frozenset[int]
    refresh_token: str | None


class _HaveOpen(msgspec.Struct):
    have_open: bool


class _OpenAppid(msgspec.Struct):
    open_appid: str


class _Ok(msgspec.Struct):
    errcode: int = 0


OPEN_UNBOUND = 89002  # open/get: the account is bound to no open account

# Told of every attempt: the API, WeChat's errcode (or why there was none: timeout, unreachable, http_5xx,
# malformed) and the seconds it took. The app counts them in its metrics; this module knows nothing of those.
CallObserver = Callable[[str, str, float], None]


class _Fault(msgspec.Struct, frozen=True):
    """An attempt that got no useful answer, and why; ``sent`` is False when the request provably never
    left (no connection could be made), so WeChat cannot have acted on it."""

    problem: str
    sent: bool = True


class WeChatClient:
    """WeChat's APIs at ``api_base()``, asked before each attempt (a registry reload may move it);
    ``attempts`` bounds the tries for transient faults; ``observe`` is told of every attempt;
    ``breakers`` guard every attempt, keyed by the platform the call is made for and the API family.

    The calls that take no token are here; those that carry one are made through `bound`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_base: Callable[[], str],
        *,
        attempts: int = 3,
        backoff_s: float | None = None,
        rng: random.Random | None = None,
        observe: CallObserver | None = None,
        breakers: UpstreamBreakers | None = None,
    ) -> None:
        self.breakers = breakers or UpstreamBreakers()
        self._http = http
        self._observe = observe or _unobserved
        self._base = api_base
        self._attempts = attempts
        self._backoff_s = RETRY_BACKOFF_S if backoff_s is None else backoff_s
        self._rng = rng or random.Random()

    def bound(self, credential: Credential) -> BoundClient:
        """This client making its calls with ``credential``'s token."""
        return BoundClient(self, credential)

    async def component_token(
        self, component_appid: str, secret: str, ticket: str, *, platform_id: str
    ) -> FetchedToken:
        """api_component_token: a component_access_token from the verify ticket."""
        body = {
            "component_appid": component_appid,
            "component_appsecret": secret,
            "component_verify_ticket": ticket,
        }
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_component_token",
            None,
            body,
            _ComponentToken,
            platform_id=platform_id,
        )
        return FetchedToken(answer.component_access_token, answer.expires_in)

    async def clear_quota(
        self, component_appid: str, secret: str, appid: str | None, *, platform_id: str
    ) -> None:
        """clear_quota/v2 (needs no token, so it works while the quota blocks token fetches): the
        component's own quota, or ``appid``'s. Sent once (``SENT_ONCE``): each call spends one of the
        account's ten clears a month."""
        body = {"component_appid": component_appid, "appsecret": secret}
        if appid is not None:
            body["appid"] = appid
        path = "cgi-bin/component/clear_quota/v2"
        await self._call("POST", path, None, body, _Status, platform_id=platform_id)

    async def _call(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        body: dict[str, Any] | None,
        shape: type[T],
        *,
        platform_id: str,
    ) -> T:
        steps = path.split("/")
        api = steps[-2] if steps[-1] == "v2" else steps[-1]  # clear_quota/v2: "clear_quota"
        key = BreakerKey(platform_id, family_of(path))
        once = path in SENT_ONCE
        tries = 1 if once else self._attempts
        problem = "no attempt made"
        for attempt in range(tries):
            if attempt and self.breakers.state(key) is not BreakerState.OPEN:
                # Full jitter: replicas that failed together do not retry together. (Once the breaker
                # is open, the call gives up at once rather than wait to become its trial.)
                await asyncio.sleep(self._rng.uniform(0, self._backoff_s * 2**attempt))
            try:
                admission = self.breakers.admit(key, api)
            except CircuitOpen as exc:
                if not attempt:
                    raise
                # It opened meanwhile (our own faults, or with others' too): say what ours were.
                reason = f"{problem} after {attempt} attempts, then {exc.reason}"
                raise CircuitOpen(api, reason, retry_in_s=exc.retry_in_s) from None
            try:
                gate = _CALL_GATE.get()
                async with gate if gate is not None else contextlib.nullcontext():
                    outcome = await self._attempt(method, path, params, body, shape, api)
            except UpstreamError:
                self.breakers.succeeded(admission)  # a refusal is an answer: WeChat is reachable
                raise
            except BaseException:
                self.breakers.abandoned(admission)
                raise
            if isinstance(outcome, _Fault):
                self.breakers.failed(admission)
                problem = outcome.problem
                if once and outcome.sent:
                    raise OutcomeUnknown(api, problem)
                continue
            self.breakers.succeeded(admission)
            return outcome
        if once:
            raise UpstreamUnavailable(api, f"{problem}; not sent")
        raise UpstreamUnavailable(api, f"{problem} after {tries} attempts")

    async def _attempt(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        body: dict[str, Any] | None,
        shape: type[T],
        api: str,
    ) -> T | _Fault:
        """One attempt: WeChat's answer decoded, a `_Fault`, or UpstreamError for a refusal."""
        started = time.perf_counter()
        try:
            url = f"{self._base().rstrip('/')}/{path}"
            query = tuple(params) if params else None  # (httpx types a list of pairs more narrowly)
            response = await self._http.request(method, url, params=query, json=body)
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            self._observe(api, "timeout", time.perf_counter() - started)
            return _Fault("timed out connecting", sent=False)
        except httpx.TimeoutException:
            self._observe(api, "timeout", time.perf_counter() - started)
            return _Fault("timed out")
        except httpx.ConnectError as exc:
            self._observe(api, "unreachable", time.perf_counter() - started)
            return _Fault(f"cannot connect ({type(exc).__name__})", sent=False)
        except httpx.TransportError as exc:  # the connection broke after the request may have gone
            self._observe(api, "unreachable", time.perf_counter() - started)
            return _Fault(f"connection lost ({type(exc).__name__})")
        elapsed = time.perf_counter() - started
        if response.status_code >= 500:
            self._observe(api, "http_5xx", elapsed)
            return _Fault(f"HTTP {response.status_code}")
        try:
            status = msgspec.json.decode(response.content, type=_Status)
        except msgspec.DecodeError:
            self._observe(api, "malformed", elapsed)
            return _Fault(f"malformed answer (HTTP {response.status_code})")
        self._observe(api, str(status.errcode), elapsed)
        log.info("wechat %s errcode=%s %.0fms", api, status.errcode, elapsed * 1000)
        if status.errcode in TRANSIENT_ERRCODES:
            return _Fault(f"errcode {status.errcode}")
        if status.errcode != 0:
            raise UpstreamError(api, status.errcode, _RID.sub("", status.errmsg))
        try:
            return msgspec.json.decode(response.content, type=shape)
        except msgspec.DecodeError:
            return _Fault("answer without the expected fields")


def _no_errcode(answer: object) -> None:
    """A typed call's answer: its refusals were raised as UpstreamError."""


class BoundClient:
    """WeChat's calls made with one credential's token: an authorizer's or a component's.

    The token goes into the query (replacing any token the query held) and, when WeChat calls it stale
    (40001/40014/42001), the credential renews it once and the call is sent once more with the new value:
    `exchange`, the one place this is done, for the typed calls below and for whatever a caller sends
    itself (the ``/wx`` proxy's forwarding). Resent only when that is safe and useful: never a call that
    changes state (``SENT_ONCE``, SPEC §7; the renewal still happens, so the caller's next try works), and
    not when the renewal gives the stale value back (WeChat's answer then stands). The breaker key is the
    credential's platform.
    """

    def __init__(self, wechat: WeChatClient, credential: Credential) -> None:
        self._wechat = wechat
        self.credential = credential

    async def exchange(
        self,
        path: str,
        query: Iterable[tuple[str, str]],
        send: Callable[[list[tuple[str, str]]], Awaitable[A]],
        errcode_of: Callable[[A], int | None] = _no_errcode,
    ) -> A:
        """``send`` the call to ``path`` with ``query`` and the token, renewing the token and sending
        again once if WeChat calls it stale, in the answer (``errcode_of``) or in an UpstreamError."""
        credential = self.credential
        kept = [(name, value) for name, value in query if name not in TOKEN_PARAMS]
        token = await credential.current()
        try:
            answer = await send([*kept, (credential.param, token)])
        except UpstreamError as exc:
            fresh = await self._renewed(path, token, exc.errcode)
            if fresh is None:
                raise
        else:
            fresh = await self._renewed(path, token, errcode_of(answer))
            if fresh is None:
                return answer
        return await send([*kept, (credential.param, fresh)])

    async def _renewed(self, path: str, token: str, errcode: int | None) -> str | None:
        """The token to send again with after WeChat answered ``errcode``; None when not to send again."""
        if errcode not in STALE_TOKEN_ERRCODES:
            return None
        credential = self.credential
        fresh = await credential.renew(token)
        if fresh == token:
            outcome, again = "the renewal gave it back; WeChat's answer stands", False
        elif path in SENT_ONCE:
            outcome, again = "renewed; not sent again (it changes state)", False
        else:
            outcome, again = "renewed; sending again", True
        log.info(
            "wechat called the %s of %s stale (%s) on %s: %s",
            credential.param,
            credential.platform_id,
            errcode,
            path,
            outcome,
        )
        return fresh if again else None

    async def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None,
        shape: type[T],
    ) -> T:
        platform_id = self.credential.platform_id

        def send(params: list[tuple[str, str]]) -> Awaitable[T]:
            return self._wechat._call(method, path, params, body, shape, platform_id=platform_id)

        return await self.exchange(path, query, send)

    # --- with a component_access_token ---------------------------------------------------------------

    async def authorizer_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str
    ) -> FetchedToken:
        """api_authorizer_token: an authorizer_access_token from the refresh token."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_authorizer_token",
            [],
            {
                "component_appid": component_appid,
                "authorizer_appid": authorizer_appid,
                "authorizer_refresh_token": refresh_token,
            },
            _AuthorizerToken,
        )
        return FetchedToken(
            answer.authorizer_access_token, answer.expires_in, answer.authorizer_refresh_token
        )

    async def query_auth(self, component_appid: str, code: str) -> AuthorizationInfo:
        """api_query_auth: exchange an authorization code."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_query_auth",
            [],
            {"component_appid": component_appid, "authorization_code": code},
            _QueryAuth,
        )
        return answer.authorization_info

    async def authorizer_list(
        self, component_appid: str, offset: int, count: int = 500
    ) -> tuple[int, list[AuthorizerListItem]]:
        """api_get_authorizer_list: one page (at most 500) and the total."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_get_authorizer_list",
            [],
            {"component_appid": component_appid, "offset": offset, "count": count},
            _AuthorizerList,
        )
        return answer.total_count, answer.items

    async def create_pre_auth_code(self, component_appid: str) -> tuple[str, int]:
        """api_create_preauthcode: a single-use pre-auth code and its lifetime."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_create_preauthcode",
            [],
            {"component_appid": component_appid},
            _PreAuthCode,
        )
        return answer.pre_auth_code, answer.expires_in

    async def authorizer_info(self, component_appid: str, authorizer_appid: str) -> AuthorizerProfile:
        """api_get_authorizer_info: the account's name, principal, kind and status."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_get_authorizer_info",
            [],
            {"component_appid": component_appid, "authorizer_appid": authorizer_appid},
            _AuthorizerInfo,
        )
        return answer.authorizer_info

    async def authorizer_details(self, component_appid: str, authorizer_appid: str) -> AuthorizerDetails:
        """api_get_authorizer_info with its ``authorization_info``: the account, and the permission sets
        and refresh token of its authorization of this component."""
        answer = await self._call(
            "POST",
            "cgi-bin/component/api_get_authorizer_info",
            [],
            {"component_appid": component_appid, "authorizer_appid": authorizer_appid},
            _AuthorizerDetails,
        )
        grant = answer.authorization_info
        return AuthorizerDetails(
            answer.authorizer_info,
            frozenset(f.funcscope_category.id for f in grant.func_info),
            grant.authorizer_refresh_token,
        )

    # --- with an authorizer_access_token -------------------------------------------------------------

    async def open_get(self) -> str | None:
        """open/get: the open account the authorizer is bound to, or None when unbound."""
        try:
            answer = await self._call("POST", "cgi-bin/open/get", [], {}, _OpenAppid)
        except UpstreamError as exc:
            if exc.errcode == OPEN_UNBOUND:
                return None
            raise
        return answer.open_appid

    async def open_have(self) -> bool:
        """open/have: whether the authorizer is bound to an open account (not which one; it needs only
        set 3 or 30, where open/get needs 24 or 25)."""
        answer = await self._call("GET", "cgi-bin/open/have", [], None, _HaveOpen)
        return answer.have_open

    async def open_bind(self, open_appid: str) -> None:
        """open/bind: bind the authorizer to ``open_appid``."""
        await self._call("POST", "cgi-bin/open/bind", [], {"open_appid": open_appid}, _Ok)

    async def open_create(self) -> str:
        """open/create: a new open account with the authorizer's principal, the authorizer bound to it."""
        answer = await self._call("POST", "cgi-bin/open/create", [], {}, _OpenAppid)
        return answer.open_appid

    async def jsapi_ticket(self) -> FetchedToken:
        """ticket/getticket?type=jsapi: the JS-SDK ticket of an authorizer."""
        answer = await self._call("GET", "cgi-bin/ticket/getticket", [("type", "jsapi")], None, _Ticket)
        return FetchedToken(answer.ticket, answer.expires_in)

    async def send_custom_text(self, touser: str, content: str) -> None:
        """message/custom/send: a text customer-service message to a user of an official account or
        mini program."""
        body = {"touser": touser, "msgtype": "text", "text": {"content": content}}
        await self._call("POST", "cgi-bin/message/custom/send", [], body, _Status)


def _unobserved(api: str, errcode: str, seconds: float) -> None:
    """The observer of a client nobody watches."""
