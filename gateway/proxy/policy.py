"""The WeChat-compatible proxy's policy: who may call what, with which real token, and what to say when not.

Existing SDKs only change their API host. They get an opaque gateway token from ``/wx/cgi-bin/token``
(bound to one client and one authorizer, stored hashed, expiring, revocable); every other call carries it
as ``access_token`` and is sent on to WeChat with the real token of the component routing picks. Real
tokens never leave through ``/wx``. Refusals are answered as WeChat would, ``{"errcode", "errmsg"}``: the
proxy's own are `WxError` in WeChat's words, and the services' refusals it lets through are worded so by
the ``/wx`` router (``gateway.http.errors``).
Every call, ``/wx/cgi-bin/token`` included, counts against the client's rate limit as soon as the client
is known (``gateway.access.ratelimit``: 429, errcode 45009). The byte-for-byte forwarding itself lives in
``gateway.proxy.forwarding``. Forwarded calls go through the upstream breakers
(``gateway.wechat.breaker``), keyed by
platform and ``proxy:<prefix>``: WeChat's faults (no answer, HTTP 5xx, ``-1``) still pass through as they
come, but after repeated ones calls fail fast with ``-1`` until a trial call succeeds.

User logins (SPEC §4): an SDK's own login calls carry the client key as their ``secret`` and are sent as
the component-signed forms WeChat wants from a component acting for an authorizer (`LOGINS`); the
secret never leaves. Calls that carry a user's own OAuth token (`USER_TOKEN_PATHS`) pass through as they
are. ``cgi-bin/stable_token`` is answered here like ``cgi-bin/token``: WeChat does not let a component
call it for an authorizer (wechat-protocol.md §9).
"""

from __future__ import annotations

import logging
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import httpx
import msgspec

from gateway.access.ratelimit import RateLimiter
from gateway.access.service import authenticate
from gateway.authorizations.service import AuthorizationService
from gateway.credentials.single_flight import SingleFlight
from gateway.credentials.tokens import QUOTA_ERRCODE, TokenService
from gateway.errors import CircuitOpen, Refused, Unauthenticated, WeChatTimedOut, WeChatUnavailable, WxError
from gateway.observability.logs import REQUEST_CLIENT
from gateway.observability.metrics import Metrics
from gateway.proxy.forwarding import Reply, SpooledBody, errcode_of, forward
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Client, RateLimit
from gateway.store.audit_trail import AuditTrail
from gateway.store.gateway_tokens import GatewayTokenStore, IssuedGatewayToken
from gateway.wechat.breaker import BreakerKey, UpstreamBreakers, proxy_family
from gateway.wechat.client import BoundClient
from gateway.wechat.routing import required_sets

__all__ = ["GATEWAY_TOKEN_LIFETIME_S", "LOGINS", "USER_TOKEN_PATHS", "Login", "WxProxy"]

log = logging.getLogger(__name__)

GATEWAY_TOKEN_LIFETIME_S = 7200
RESOLVED_CACHE_S = 2.0
# cgi-bin/stable_token in normal mode answers the token it issued before while it has this long left:
# WeChat's does ("access_token有效期内重复调用该接口不会更新", doc/service/api/base/api_getstableaccesstoken),
# and SDKs call it often. Gateway tokens are stored hashed, so the plaintext is kept in this process only.
STABLE_TOKEN_MIN_LEFT_S = 300.0
RESOLVED_CACHE_MAX = 100_000
# Calls WeChat wants signed by the component rather than by the authorizer's token.
_COMPONENT_SIGNED = ("sns/component/", "sns/oauth2/component/")
# Members of component APIs' answers that hold WeChat's tokens (see _without_tokens).
_TOKEN_MEMBERS = frozenset(
    {"component_access_token", "authorizer_access_token", "authorizer_refresh_token", "refresh_token"}
)


@dataclass(frozen=True)
class Login:
    """An SDK's plain login call and the component-signed call it is sent as."""

    target: str  # the path WeChat wants from a component
    grant_type: str
    code_param: str  # the parameter that carries the user's code (or refresh token)
    missing_code: tuple[int, str]  # WeChat's errcode and words when that parameter is missing
    secret_required: bool  # whether WeChat's plain call takes the account's appsecret


# Plain login paths → their component forms, the secret dropped and component_appid and
# component_access_token added. Sources:
# - mini program: doc/oplatform/openApi/miniprogram-management/login/api_thirdpartycode2session.html
#   (GET sns/component/jscode2session?appid&grant_type&component_appid&component_access_token&js_code);
# - official account web OAuth: doc/oplatform/Third-party_Platforms/2.0/api/Before_Develop/Official_Accounts/
#   official_account_website_authorization.html (sns/oauth2/component/access_token?appid&code&grant_type
#   &component_appid&component_access_token, and sns/oauth2/component/refresh_token?appid&grant_type
#   =refresh_token&component_appid&component_access_token&refresh_token).
# WeChat's plain refresh takes no secret (doc/service/api/webdev/access/api_snsrefreshtoken.html): the
# user's refresh token is the credential, so an SDK's refresh is accepted without a client key (a key,
# when one is sent, is checked all the same).
LOGINS: Mapping[str, Login] = MappingProxyType(
    {
        "sns/jscode2session": Login(
            "sns/component/jscode2session", "authorization_code", "js_code", (41008, "missing code"), True
        ),
        "sns/oauth2/access_token": Login(
            "sns/oauth2/component/access_token", "authorization_code", "code", (41008, "missing code"), True
        ),
        "sns/oauth2/refresh_token": Login(
            "sns/oauth2/component/refresh_token",
            "refresh_token",
            "refresh_token",
            (41003, "refresh_token missing"),
            False,
        ),
    }
)
# Calls whose access_token is a user's web OAuth token, not a gateway token: forwarded untouched, with no
# client authentication (the user's token is the credential, checked by WeChat). Only these paths, so
# /wx relays nothing else without a client key.
USER_TOKEN_PATHS = frozenset({"sns/userinfo", "sns/auth"})
# A refresh sent without a client key (WeChat's plain refresh takes none) is limited per authorizer appid,
# before anything is looked up: by default 10 a second with bursts of 100, ample for an account's users
# refreshing their 2-hour web tokens (864,000 a day). Buckets are keyed by a hash of the appid into
# ANONYMOUS_REFRESH_BUCKETS, so random appids cannot grow the per-process buckets without bound.
ANONYMOUS_REFRESH_LIMIT = RateLimit(per_second=10.0, burst=100)
ANONYMOUS_REFRESH_BUCKETS = 4096
# Who a call without a client is counted under (metrics) and which breaker guards it.
_NO_CLIENT = "-"
_ANY_PLATFORM = "*"


# Who signs a forwarded call: the client of the authorizer or of the component whose token it carries.
_Signer = Callable[[], Awaitable[BoundClient]]


@dataclass(frozen=True)
class _Caller:
    client: Client
    authorizer_appid: str


class WxProxy(ReadsRegistry):
    """``/wx``: gateway tokens, and calls forwarded with the real token substituted."""

    def __init__(
        self,
        registry: LiveRegistry,
        gateway_tokens: GatewayTokenStore,
        tokens: TokenService,
        authorizations: AuthorizationService,
        audit: AuditTrail,
        http: httpx.AsyncClient,
        metrics: Metrics,
        limiter: RateLimiter,
        *,
        clock: Callable[[], float] = time.time,
        breakers: UpstreamBreakers | None = None,
    ) -> None:
        self._live = registry
        self._breakers = breakers or UpstreamBreakers()
        self._limiter = limiter
        self._gateway_tokens = gateway_tokens
        self._tokens = tokens
        self._authorizations = authorizations
        self._audit = audit
        self._http = http
        self._metrics = metrics
        self._clock = clock
        # Resolving a gateway token is a database read per call, the largest cost of a proxied call
        # (docs/benchmarks.md): keep resolutions briefly, one read per token when the entry lapses.
        self._resolved: dict[str, tuple[float, IssuedGatewayToken | None]] = {}
        self._resolving: SingleFlight[str, IssuedGatewayToken | None] = SingleFlight()
        self._stable: dict[tuple[str, str], str] = {}  # (client, authorizer) -> its stable_token answer

    # --- /wx/cgi-bin/token ---------------------------------------------------------------------------

    async def issue_token(
        self, grant_type: str | None, appid: str | None, secret: str | None
    ) -> dict[str, object]:
        """``GET /wx/cgi-bin/token``: a gateway token for (client, authorizer), in WeChat's shape."""
        client, appid = await self._token_caller(grant_type, appid, secret)
        token = await self._mint(client, appid)
        return {"access_token": token, "expires_in": GATEWAY_TOKEN_LIFETIME_S}

    async def issue_stable_token(self, body: bytes) -> dict[str, object]:
        """``POST /wx/cgi-bin/stable_token``, answered like ``cgi-bin/token``.

        Normal mode answers the token this process issued the same (client, authorizer) before, while it
        has `STABLE_TOKEN_MIN_LEFT_S` left, with its remaining life; ``force_refresh`` (or another replica,
        or a token revoked or nearly expired) mints a new one. Earlier tokens stay valid until they expire,
        as WeChat's do. Source: doc/service/api/base/api_getstableaccesstoken (body, 47001 for a
        malformed one).
        """
        try:
            request = msgspec.json.decode(body, type=_StableTokenBody)
        except msgspec.ValidationError as exc:
            raise WxError(47001, f"data format error: {exc}") from None
        except msgspec.DecodeError:
            raise WxError(47001, "data format error: the body must be a JSON object") from None
        client, appid = await self._token_caller(request.grant_type, request.appid, request.secret)
        key = (client.id, appid)
        held = self._stable.get(key)
        if held is not None and not request.force_refresh:
            issued = await self._resolve(held)  # revoked since, maybe by another process
            left = issued.expires_at - self._clock() if issued is not None else 0.0
            if issued is not None and issued.revoked_at is None and left > STABLE_TOKEN_MIN_LEFT_S:
                return {"access_token": held, "expires_in": int(left)}
        token = await self._mint(client, appid)
        self._stable[key] = token
        return {"access_token": token, "expires_in": GATEWAY_TOKEN_LIFETIME_S}

    async def _token_caller(
        self, grant_type: str | None, appid: str | None, secret: str | None
    ) -> tuple[Client, str]:
        """The client asking cgi-bin/token or stable_token, admitted for ``appid``; WeChat's refusals."""
        if grant_type != "client_credential":
            raise WxError(40002, "invalid grant_type: must be client_credential")
        if not appid:
            raise WxError(41002, "appid missing")
        return await self._client_by_secret(secret, appid), appid

    async def _mint(self, client: Client, appid: str) -> str:
        """A new gateway token for (client, authorizer), stored hashed and audited."""
        token = "gw_" + secrets.token_urlsafe(48)
        await self._gateway_tokens.add(token, client.id, appid, GATEWAY_TOKEN_LIFETIME_S)
        self._audit.record(client.id, "gateway_token.issued", authorizer_appid=appid)
        return token

    async def _client_by_secret(self, secret: str | None, appid: str) -> Client:
        """The client whose key an SDK sent as its appsecret, admitted for ``appid``; refused in WeChat's
        words (a wrong key is 40125 ``invalid appsecret``, what WeChat says of a wrong appsecret)."""
        if not secret:
            raise WxError(41004, "appsecret missing: pass the client key as secret")
        try:
            client = authenticate(self._registry, f"Bearer {secret}")
        except Unauthenticated:
            raise WxError(40125, "invalid appsecret: not a known client key") from None
        REQUEST_CLIENT.set(client.id)
        await self._limiter.admit(client)
        await self._admit(client, appid)
        return client

    # --- /wx/<path> ---------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> Reply:
        """Forward an authorizer's call, with the real token of the component serving this API; a user
        login is sent in its component-signed form, a call with a user's own token as it is."""
        login = LOGINS.get(path)
        if login is not None:
            return await self._login(login, method, query, headers, body)
        if path in USER_TOKEN_PATHS:
            return await self._with_user_token(method, path, query, headers, body)
        caller = await self._caller(query, headers)
        platform_id = await self._authorizations.route(caller.authorizer_appid, path)
        component_signed = path.startswith(_COMPONENT_SIGNED)
        return await self._forward(
            caller.client.id,
            caller.authorizer_appid,
            platform_id,
            method,
            path,
            query,
            headers,
            body,
            component_signed=component_signed,
        )

    async def _forward(
        self,
        client_id: str,
        appid: str,
        platform_id: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
        *,
        component_signed: bool,
    ) -> Reply:
        """An authorizer's call sent with the serving component's credentials: the authorizer's token, or
        for a component-signed call the component's token and appid with the authorizer's as ``appid``.
        Its body is spooled, so the bound client can send it again once on a stale token; observed."""
        platform = self._registry.platform(platform_id)
        if platform is None:  # routing chose it, then a reload took it out of the registry
            raise WxError(40013, f"invalid appid: no platform '{platform_id}' in the registry")
        if component_signed:
            signer: _Signer = partial(self._tokens.component_client, platform_id)
            query = [(n, v) for n, v in query if n not in ("component_appid", "appid")]
            query += [("component_appid", platform.component_appid), ("appid", appid)]
        else:
            signer = partial(self._tokens.authorizer_client, platform_id, appid)
        spooled = await SpooledBody.read(body)
        started = time.perf_counter()
        try:
            reply = await self._exchange(signer, platform_id, method, path, query, headers, spooled)
        finally:
            spooled.close()
        self._observe(client_id, platform_id, appid, path, errcode_of(reply.body), reply.status, started)
        return reply

    async def _login(
        self,
        login: Login,
        method: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> Reply:
        """An SDK's login, checked and sent as ``login.target`` with the serving component's credentials;
        the client key (``secret``) and any token of the caller's stay here."""
        params = dict(reversed(query))  # the first value of each name, as WeChat reads a query
        grant_type, appid, secret = params.get("grant_type"), params.get("appid"), params.get("secret")
        if grant_type != login.grant_type:
            raise WxError(40002, f"invalid grant_type: must be {login.grant_type}")
        if not appid:
            raise WxError(41002, "appid missing")
        client: Client | None = None
        if login.secret_required or secret:
            client = await self._client_by_secret(secret, appid)
        elif headers.get("authorization"):
            client = await self._client_by_header(headers, appid)
        else:
            bucket = zlib.crc32(appid.encode()) % ANONYMOUS_REFRESH_BUCKETS
            await self._limiter.admit_anonymous(f"refresh:{bucket}", ANONYMOUS_REFRESH_LIMIT)
        if not params.get(login.code_param):
            raise WxError(*login.missing_code)
        try:
            platform_id = await self._authorizations.route(appid, login.target)
        except Refused:
            if client is None:
                # Anonymous: one answer for an appid not served and one served but not signable (revoked,
                # set 4 elsewhere), so a caller learns nothing of which accounts the gateway serves.
                raise WxError(40013, "invalid appid") from None
            raise
        forwarded = [(name, value) for name, value in query if name != "secret"]
        client_id = client.id if client is not None else _NO_CLIENT
        return await self._forward(
            client_id,
            appid,
            platform_id,
            method,
            login.target,
            forwarded,
            headers,
            body,
            component_signed=True,
        )

    async def _with_user_token(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> Reply:
        """A call authenticated by a user's own OAuth token (``sns/userinfo``, ``sns/auth``): forwarded as
        it is; WeChat judges the token."""
        if not any(name == "access_token" and value for name, value in query):
            raise WxError(41001, "access_token missing")
        spooled = await SpooledBody.read(body)
        started = time.perf_counter()
        try:
            reply = await self._send(_ANY_PLATFORM, method, path, query, headers, spooled)
        finally:
            spooled.close()
        errcode = errcode_of(reply.body)
        self._observe(_NO_CLIENT, _ANY_PLATFORM, None, path, errcode, reply.status, started)
        return reply

    async def component_call(
        self,
        platform_id: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
    ) -> Reply:
        """``/wx/component/{platform}/<path>``: forwarded with the component_access_token."""
        try:
            client = authenticate(self._registry, headers.get("authorization"))
        except Unauthenticated as exc:
            raise WxError(40001, f"invalid credential: {exc.message}") from None
        REQUEST_CLIENT.set(client.id)
        await self._limiter.admit(client)
        if "component" not in client.scopes:
            raise WxError(
                48001, f"api unauthorized: client '{client.id}' does not hold the scope 'component'"
            )
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise WxError(40013, f"invalid appid: no platform '{platform_id}' in the registry")
        spooled = await SpooledBody.read(body)
        started = time.perf_counter()
        try:
            signer = partial(self._tokens.component_client, platform_id)
            reply = await self._exchange(signer, platform_id, method, path, query, headers, spooled)
        finally:
            spooled.close()
        self._observe(client.id, platform_id, None, path, errcode_of(reply.body), reply.status, started)
        return _without_tokens(reply)

    # --- the pieces ---------------------------------------------------------------------------------

    async def _caller(self, query: list[tuple[str, str]], headers: Mapping[str, str]) -> _Caller:
        """Who calls for which authorizer: a gateway token, or a bearer key with X-Authorizer-Appid."""
        token = next((value for name, value in query if name == "access_token"), None)
        if token:
            issued = await self._resolve(token)
            if issued is None or issued.revoked_at is not None:
                raise WxError(40001, "invalid credential, access_token is invalid or not latest")
            if issued.expires_at <= self._clock():
                raise WxError(42001, "access_token expired")
            client = self._registry.client(issued.client_id)
            if client is None:
                raise WxError(40001, "invalid credential: the client of this token is no longer registered")
            REQUEST_CLIENT.set(client.id)
            appid = issued.authorizer_appid
        elif headers.get("authorization"):
            appid = headers.get("x-authorizer-appid", "")
            if not appid:
                raise WxError(41002, "appid missing: send X-Authorizer-Appid with a bearer key")
            return _Caller(await self._client_by_header(headers, appid), appid)
        else:
            raise WxError(41001, "access_token missing")
        await self._limiter.admit(client)
        await self._admit(client, appid)
        return _Caller(client, appid)

    async def _client_by_header(self, headers: Mapping[str, str], appid: str) -> Client:
        """The client of an ``Authorization: Bearer`` header, admitted for ``appid``."""
        try:
            client = authenticate(self._registry, headers.get("authorization"))
        except Unauthenticated as exc:
            raise WxError(40001, f"invalid credential: {exc.message}") from None
        await self._limiter.admit(client)
        await self._admit(client, appid)
        return client

    async def _resolve(self, token: str) -> IssuedGatewayToken | None:
        now = self._clock()
        cached = self._resolved.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        issued = await self._resolving.run(token, lambda: self._gateway_tokens.resolve(token))
        if len(self._resolved) > RESOLVED_CACHE_MAX:
            self._resolved.clear()
        self._resolved[token] = (now + RESOLVED_CACHE_S, issued)
        return issued

    async def revoke_tokens(self, client_id: str, authorizer_appid: str | None = None) -> int:
        """Revoke a client's gateway tokens; this replica stops honouring them at once, others within
        ``RESOLVED_CACHE_S``."""
        revoked = await self._gateway_tokens.revoke(client_id=client_id, authorizer_appid=authorizer_appid)
        self._resolved.clear()
        for key in [k for k in self._stable if k[0] == client_id and authorizer_appid in (None, k[1])]:
            del self._stable[key]
        return revoked

    async def _admit(self, client: Client, appid: str) -> None:
        if "proxy" not in client.scopes:
            raise WxError(48001, f"api unauthorized: client '{client.id}' does not hold the scope 'proxy'")
        if "*" not in client.authorizers and appid not in client.authorizers:
            raise WxError(48001, f"api unauthorized: client '{client.id}' may not act for this authorizer")
        grants = await self._authorizations.grants(appid)
        if not grants:
            raise WxError(40013, "invalid appid: the gateway serves no authorizer with this appid")

    async def _exchange(
        self,
        signer: _Signer,
        platform_id: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: SpooledBody,
    ) -> Reply:
        """The call forwarded through ``signer``, the client whose token it carries (renewed and sent
        again once on a stale one)."""
        client = await signer()

        def send(params: list[tuple[str, str]]) -> Awaitable[Reply]:
            return self._send(platform_id, method, path, params, headers, body)

        return await client.exchange(path, query, send, _errcode_of_reply)

    async def _send(
        self,
        platform_id: str,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: SpooledBody,
    ) -> Reply:
        url = f"{self._registry.wechat.api_base}/{path}"  # read per call: a reload may move api_base
        try:
            admission = self._breakers.admit(BreakerKey(platform_id, proxy_family(path)), path)
        except CircuitOpen as exc:
            raise WeChatUnavailable(f"system error: WeChat keeps failing; {exc.reason}") from None
        try:
            reply = await forward(self._http, method, url, params, headers, body)
        except httpx.TimeoutException:
            self._breakers.failed(admission)
            raise WeChatTimedOut("system error: WeChat did not answer in time") from None
        except httpx.TransportError as exc:
            self._breakers.failed(admission)
            raise WeChatUnavailable(
                f"system error: WeChat cannot be reached ({type(exc).__name__})"
            ) from None
        except BaseException:
            self._breakers.abandoned(admission)
            raise
        # WeChat's own faults pass through unchanged; they count against the breaker all the same.
        if reply.status >= 500 or errcode_of(reply.body) == -1:
            self._breakers.failed(admission)
        else:
            self._breakers.succeeded(admission)
        return reply

    def _observe(
        self,
        client_id: str,
        platform_id: str,
        appid: str | None,
        path: str,
        errcode: int | None,
        status: int,
        started: float,
    ) -> None:
        elapsed = time.perf_counter() - started
        api = path if required_sets(path) is not None else "other"
        code = str(errcode if errcode is not None else 0)
        self._metrics.wx_calls.labels(client_id, platform_id, api, code).inc()
        self._metrics.wx_latency.labels(api).observe(elapsed)
        if errcode == QUOTA_ERRCODE:  # WeChat's own: the gateway's rate limit refuses before any call
            self._metrics.quota_errors.labels(platform_id, api).inc()
        log.info(
            "wx call client=%s authorizer=%s platform=%s path=%s status=%s errcode=%s %.1fms",
            client_id,
            appid or "-",
            platform_id,
            path,
            status,
            code,
            elapsed * 1000,
        )


class _StableTokenBody(msgspec.Struct):
    """``cgi-bin/stable_token``'s body; a member missing reaches the check that names WeChat's error."""

    grant_type: str | None = None
    appid: str | None = None
    secret: str | None = None
    force_refresh: bool = False


def _without_tokens(reply: Reply) -> Reply:
    """``reply`` with WeChat's own tokens blanked out of its JSON: component APIs answer with them
    (``api_get_authorizer_info`` and ``api_get_authorizer_list`` with refresh tokens, ``api_query_auth`` and
    ``api_authorizer_token`` with access tokens), and real tokens never leave the gateway through ``/wx``.
    Only answers read whole are looked at: WeChat's JSON always is (``forwarding.JSON_PEEK_LIMIT``)."""
    if reply.body is None or not any(member.encode() in reply.body for member in _TOKEN_MEMBERS):
        return reply
    try:
        document = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        return reply
    return Reply(reply.status, reply.headers, msgspec.json.encode(_blanked(document)))


def _blanked(value: object) -> object:
    # "" rather than no member: SDKs that read the member find a string, as before.
    if isinstance(value, dict):
        return {
            name: "" if name in _TOKEN_MEMBERS and isinstance(item, str) else _blanked(item)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_blanked(item) for item in value]
    return value


def _errcode_of_reply(reply: Reply) -> int | None:
    """Where the bound client finds WeChat's errcode in a forwarded answer."""
    return errcode_of(reply.body)
