"""Tokens: fresh on demand, renewed ahead of expiry, fetched from WeChat once per renewal.

Three kinds of credential, each keyed in the store (``CredentialKey``):

    component:{platform}            component_access_token, from the stored verify ticket
    authorizer:{platform}:{appid}   authorizer_access_token, from the stored refresh token
    jsapi:{platform}:{appid}        JS-SDK ticket, with the authorizer token

Reading a token never waits on anything while a still-valid one is stored. Renewal is single-flight per
key inside a process, and across replicas the key's database lease decides who fetches; the others poll
until the new value lands (or the lease lapses, when its holder died, and one of them takes over).
A failed renewal releases the lease and leaves the stored value as it was. WeChat's calls that carry a
token go through the clients `component_client` and `authorizer_client` hand out (``BoundClient``): a
token WeChat calls stale comes back here as a ``stale`` report, renewed once per stale value.

Only tokens in use are kept warm (SPEC §7): WeChat counts every api_authorizer_token call against a daily
quota (its token docs, wechat-protocol.md §3), and renewing every authorizer's token every two hours
costs 12 calls a day for each one whether anybody asks for it or not. A use — a token handed to a
``/v1`` caller (from memory too), used by the ``/wx`` proxy or by the gateway on a caller's behalf — is
noted in memory and written to the store in batches by the renewer (``credentials.used_at``, at most
once per ``use_resolution`` per key and process); the renewer of every replica renews ahead of expiry
only authorizer tokens and JS-SDK tickets used within ``warm_window_s``, and every component token. An
idle one lapses and is fetched on demand by its next caller. Background work (the renewer itself, the
catalog sync) runs ``untracked``: it uses tokens without keeping them warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import msgspec

from gateway.credentials.single_flight import SingleFlight
from gateway.errors import (
    AuthorizationRevoked,
    AuthorizerUnknown,
    PlatformUnknown,
    QuotaExhausted,
    ReauthorizationRequired,
    Refused,
    TicketMissing,
    UpstreamError,
    UpstreamUnavailable,
    WeChatUnavailable,
)
from gateway.observability.metrics import Metrics
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Platform
from gateway.store import Store
from gateway.store.credentials import StoredCredential
from gateway.store.database import STORE_UNAVAILABLE
from gateway.wechat.client import BoundClient, FetchedToken, WeChatClient

__all__ = ["CredentialKey", "Token", "TokenService"]

log = logging.getLogger(__name__)

TICKET_LIFETIME_S = 12 * 3600
QUOTA_ERRCODE = 45009
TICKET_ERRCODES = frozenset({61005, 61006})
REFRESH_TOKEN_INVALID = 61023
NOT_AUTHORIZED = 61003
BEIJING_UTC_OFFSET_S = 8 * 3600
TAKEOVER_RENEWAL_S = 120.0  # well inside WeChat's (undocumented, reportedly ~5 min) old-token overlap
# A token WeChat called stale (40001/40014/42001, through /wx or ?stale=) is renewed once per stale value:
# a report of a value no longer stored answers the stored one, a report of the stored value renews it. In a
# process, successful renewals of one key on such reports are this far apart at least, so a storm of 40001s
# (WeChat refusing every new token) costs one renewal per spacing rather than one per request: a report of
# the stored value inside the spacing waits for its end, then renews it (once for all waiting callers), and
# never gets the value it reported back (SPEC §4, §7). A failed renewal starts no spacing.
STALE_RENEWAL_SPACING_S = 5.0
DEFAULT_WARM_WINDOW_S = 6 * 3600.0  # SPEC §7's "recent window"; GATEWAY_TOKEN_WARM_WINDOW_S
ALWAYS_WARM = ("component:",)  # one per platform, and everything else needs it: never left to lapse
# Whether the running task's token uses keep tokens warm: not in background work (see `untracked`).
_UNTRACKED: contextvars.ContextVar[bool] = contextvars.ContextVar("untracked_token_use", default=False)


class Token(msgspec.Struct, frozen=True):
    """A token to hand out: its value and when it stops working."""

    platform_id: str
    value: str
    expires_at: float


class CredentialKey(msgspec.Struct, frozen=True):
    """What a credential is for; ``str(key)`` is its store key."""

    kind: str  # "component" | "authorizer" | "jsapi"
    platform_id: str
    authorizer_appid: str | None = None

    def __str__(self) -> str:
        if self.authorizer_appid is None:
            return f"{self.kind}:{self.platform_id}"
        return f"{self.kind}:{self.platform_id}:{self.authorizer_appid}"

    @classmethod
    def parse(cls, key: str) -> CredentialKey:
        """The key back from its string form."""
        kind, platform_id, *rest = key.split(":")
        return cls(kind, platform_id, rest[0] if rest else None)


OUTAGE_MARGIN_S = 60.0  # a token served from memory in a store outage has at least this left


@dataclass(frozen=True)
class _Cached:
    token: Token
    until: float


@dataclass(frozen=True)
class _ReportRenewal:
    """This process's last renewal of a key on a stale report: when it was saved, and the digest of the
    reported value if WeChat handed that same value back (JS-SDK tickets stay the same while valid), so
    further reports of it cost no second renewal (SPEC §4: once per stale value)."""

    at: float
    unchanged: bytes | None


Fetch = Callable[[], Awaitable[FetchedToken]]


class _Held:
    """A token as the service handed it out, renewed through the service when WeChat calls it stale
    (the `Credential` of a `BoundClient`)."""

    def __init__(self, token: Token, param: str, renewal: Callable[[str], Awaitable[Token]]) -> None:
        self.platform_id = token.platform_id
        self.param = param
        self._value = token.value
        self._renewal = renewal

    async def current(self) -> str:
        return self._value

    async def renew(self, stale: str) -> str:
        self._value = (await self._renewal(stale)).value
        return self._value


class TokenService(ReadsRegistry):
    """Component tokens, authorizer tokens and JS-SDK tickets for the platforms of the registry in force.

    ``owner`` names this process in leases; ``lease_s`` bounds how long a dead replica can hold a
    renewal; ``wait_s`` how long a caller waits for another replica's renewal; ``cache_s`` how long a
    token read from the store is reused without reading it again; ``metrics`` counts renewals and 45009s;
    ``warm_window_s`` how recently an authorizer token or JS-SDK ticket must have been used for the
    renewer to renew it ahead of expiry (``math.inf``: every one, as before SPEC §7 said otherwise).
    """

    def __init__(
        self,
        registry: LiveRegistry,
        store: Store,
        wechat: WeChatClient,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lease_s: float = 30.0,
        wait_s: float = 40.0,
        cache_s: float = 5.0,
        metrics: Metrics | None = None,
        warm_window_s: float = DEFAULT_WARM_WINDOW_S,
    ) -> None:
        if not warm_window_s > 0:
            raise ValueError("warm_window_s must be positive")
        self._metrics = metrics
        self._live = registry
        self._store = store
        self._wechat = wechat
        self._owner = owner
        self._clock = clock
        self._rng = rng or random.Random()
        self._lease_s = lease_s
        self._wait_s = wait_s
        self._cache_s = cache_s
        self._cache: dict[str, _Cached] = {}
        self._renewals: SingleFlight[str, Token] = SingleFlight()
        self._reads: SingleFlight[str, StoredCredential | None] = SingleFlight()
        self._rejected_tickets: dict[str, str] = {}  # platform -> the ticket WeChat refused (61005/61006)
        self._warm_window_s = warm_window_s
        # A stored use lags the last one by less than this: a twentieth of the window, 1 to 15 minutes.
        self.use_resolution = min(max(warm_window_s / 20, 60.0), 900.0)
        self._used: dict[str, float] = {}  # key -> this process's last use of it
        self._flushed: dict[str, float] = {}  # key -> the use this process last wrote to the store
        self._stale_renewed: dict[str, _ReportRenewal] = {}  # key -> this process's last renewal on a report

    # --- public -------------------------------------------------------------------------------------

    async def component_token(self, platform_id: str, *, stale: str | None = None) -> Token:
        """The platform's component_access_token; ``stale`` forces a renewal if that is still the value."""
        platform = self._platform(platform_id)
        key = CredentialKey("component", platform_id)
        return await self._obtain(key, lambda: self._fetch_component(platform), stale=stale)

    async def authorizer_token(self, platform_id: str, appid: str, *, stale: str | None = None) -> Token:
        """The authorizer_access_token for ``appid`` through ``platform_id``."""
        platform = self._platform(platform_id)
        key = CredentialKey("authorizer", platform_id, appid)
        return await self._obtain(key, lambda: self._fetch_authorizer(platform, appid), stale=stale)

    async def jsapi_ticket(self, platform_id: str, appid: str, *, stale: str | None = None) -> Token:
        """The JS-SDK ticket of ``appid``, cached centrally like a token."""
        self._platform(platform_id)
        key = CredentialKey("jsapi", platform_id, appid)
        return await self._obtain(key, lambda: self._fetch_jsapi(platform_id, appid), stale=stale)

    async def component_client(self, platform_id: str) -> BoundClient:
        """The platform's component client: WeChat's calls with its component_access_token (the token
        read now, so a refusal to give one comes here), renewed when WeChat calls it stale."""
        token = await self.component_token(platform_id)

        def renewal(stale: str) -> Awaitable[Token]:
            return self.component_token(platform_id, stale=stale)

        return self._wechat.bound(_Held(token, "component_access_token", renewal))

    async def authorizer_client(self, platform_id: str, appid: str) -> BoundClient:
        """``appid``'s client through ``platform_id``: WeChat's calls with its authorizer_access_token
        (read now), renewed when WeChat calls it stale."""
        token = await self.authorizer_token(platform_id, appid)

        def renewal(stale: str) -> Awaitable[Token]:
            return self.authorizer_token(platform_id, appid, stale=stale)

        return self._wechat.bound(_Held(token, "access_token", renewal))

    @staticmethod
    @contextlib.contextmanager
    def untracked() -> Iterator[None]:
        """Token uses inside (and in tasks started inside) do not keep tokens warm: for background work
        such as the catalog sync, which touches every account's token and would otherwise keep them all
        warm forever."""
        reset = _UNTRACKED.set(True)
        try:
            yield
        finally:
            _UNTRACKED.reset(reset)

    async def flush_uses(self) -> int:
        """Write this process's uses to the store: those at least ``use_resolution`` newer than the last
        written for their key. Returns how many keys were written."""
        resolution = self.use_resolution
        pending = {
            key: when
            for key, when in self._used.items()
            if when - self._flushed.get(key, -math.inf) >= resolution
        }
        await self._store.credentials.mark_used(pending)
        self._flushed.update(pending)
        return len(pending)

    async def forget_authorizer(self, platform_id: str, appid: str) -> None:
        """Drop every token of an authorization (revoked)."""
        keys = [str(CredentialKey(kind, platform_id, appid)) for kind in ("authorizer", "jsapi")]
        for key in keys:
            self._cache.pop(key, None)
            self._used.pop(key, None)
            self._flushed.pop(key, None)
        await self._store.credentials.delete(*keys)

    async def adopt_authorizer_token(
        self, platform_id: str, appid: str, value: str | None, expires_in: int | None
    ) -> None:
        """Make the token api_query_auth returned (``value``, valid ``expires_in`` s) the authorizer's
        current one, replacing the stored one, which WeChat may have invalidated at once on a
        re-authorization (WeixinCloud/wxcloudrun-wxcomponent issue 10). Without a token (the account holds
        no API permission) the stored one is dropped, to be fetched again when next asked for.

        This process stops serving the old token at once; other replicas within their ``cache_s``.
        """
        key = CredentialKey("authorizer", platform_id, appid)
        name = str(key)
        self._stale_renewed.pop(name, None)  # a new token: its first stale report renews it
        if not value or not expires_in:
            self._cache.pop(name, None)
            await self._store.credentials.delete(name)
            return
        now = self._clock()
        lifetime = max(1, expires_in)
        expires_at = now + lifetime
        renew_after = self._renew_after(now, lifetime)
        await self._store.credentials.replace(name, value, expires_at=expires_at, renew_after=renew_after)
        self._cache[name] = _Cached(
            Token(platform_id, value, expires_at), min(now + self._cache_s, renew_after)
        )
        log.info("stored the token api_query_auth returned for %s", key)

    async def renew_due(self, concurrency: int = 8) -> int:
        """One pass of the background renewer: write the uses noted since the last pass, warm every
        platform's component token, renew every credential whose renewal time has come and which was
        used within the warm window. Returns how many renewals were attempted."""
        with self.untracked():  # renewing a JS-SDK ticket needs the authorizer token: not a use of it
            return await self._renew_due(concurrency)

    async def _renew_due(self, concurrency: int) -> int:
        await self.flush_uses()
        now = self._clock()
        registry = self._registry
        used_since = None if math.isinf(self._warm_window_s) else now - self._warm_window_s
        due = await self._store.credentials.due(now, used_since=used_since, always=ALWAYS_WARM)
        # A platform taken out of the registry by a reload keeps its stored credentials (it may come back)
        # but they are no longer renewed.
        keys = [
            key for key in map(CredentialKey.parse, due) if registry.platform(key.platform_id) is not None
        ]
        receipts = await self._store.ticket_receipts()
        for platform in registry.platforms:
            component = CredentialKey("component", platform.id)
            if platform.id in receipts and component not in keys:
                stored = await self._store.credentials.get(str(component))
                if stored is None or not stored.valid_at(now):
                    keys.append(component)
        gate = asyncio.Semaphore(concurrency)

        async def renew(key: CredentialKey) -> None:
            async with gate:
                try:
                    await self._renew_in_background(key)
                except Refused as exc:
                    log.warning("renewal of %s failed: %s", key, exc.message)

        await asyncio.gather(*(renew(key) for key in keys))
        return len(keys)

    async def run_renewer(self, stop: asyncio.Event, interval_s: float = 15.0) -> None:
        """Renew until ``stop`` is set, every ``interval_s`` (jittered so replicas spread out)."""
        while not stop.is_set():
            try:
                await self.renew_due()
            except Exception:  # the renewer must outlive any one failure (the database restarting, say)
                log.exception("token renewer pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s * self._rng.uniform(0.8, 1.2))

    # --- the exactly-once machinery -----------------------------------------------------------------

    async def _obtain(self, key: CredentialKey, fetch: Fetch, *, stale: str | None) -> Token:
        name = str(key)
        now = self._clock()
        if key.kind != "component" and not _UNTRACKED.get():
            self._used[name] = now
        # A report is checked against the store, never memory: another replica may have replaced the value.
        cached = self._cache.get(name)
        if cached is not None and stale is None and now < cached.until:
            return cached.token
        # When a cached token lapses, every request in flight would read the store: one reads for all.
        try:
            stored = await self._reads.run(name, lambda: self._store.credentials.get(name))
        except STORE_UNAVAILABLE:
            # The database is restarting: a token still good at WeChat beats a refusal. Renewals wait.
            if cached is not None and stale is None and now < cached.token.expires_at - OUTAGE_MARGIN_S:
                log.debug("store unreachable: serving %s from memory", name)
                return cached.token
            raise

        if stored is not None and stored.valid_at(now):
            if stale is None or not _same(stored.value, stale):
                return self._remember(key, stored)  # a report of a value already replaced: the current one
            last = self._stale_renewed.get(name)
            if last is not None and last.unchanged == _digest(stale):
                return self._remember(key, stored)  # renewed once already: WeChat gave the same value
            since = now - last.at if last is not None else math.inf
            if since < STALE_RENEWAL_SPACING_S:
                # This process renewed it on a report moments ago: renew again when the spacing ends.
                log.warning("%s called stale again right after its renewal; renewing it again shortly", key)
                await asyncio.sleep(STALE_RENEWAL_SPACING_S - since)
                # Another caller or replica may have renewed it meanwhile (the renewal compares again).
                stored = await self._reads.run(name, lambda: self._store.credentials.get(name))
                now = self._clock()
                if stored is not None and stored.valid_at(now) and not _same(stored.value, stale):
                    return self._remember(key, stored)
        if stored is not None and stored.blocked_until is not None and stored.blocked_until > now:
            raise _quota_error(key)
        return await self._renewals.run(name, lambda: self._renew(key, fetch, stale=stale, background=False))

    async def _renew_in_background(self, key: CredentialKey) -> None:
        match key.kind:
            case "component":
                platform = self._platform(key.platform_id)
                fetch: Fetch = lambda: self._fetch_component(platform)  # noqa: E731
            case "authorizer" if key.authorizer_appid is not None:
                platform, appid = self._platform(key.platform_id), key.authorizer_appid
                fetch = lambda: self._fetch_authorizer(platform, appid)  # noqa: E731
            case "jsapi" if key.authorizer_appid is not None:
                platform_id, appid = key.platform_id, key.authorizer_appid
                fetch = lambda: self._fetch_jsapi(platform_id, appid)  # noqa: E731
            case _:
                log.warning("ignoring unknown credential %s", key)
                return
        name = str(key)
        await self._renewals.run(name, lambda: self._renew(key, fetch, stale=None, background=True))

    async def _renew(self, key: CredentialKey, fetch: Fetch, *, stale: str | None, background: bool) -> Token:
        name = str(key)
        credentials = self._store.credentials
        deadline = self._clock() + self._wait_s
        waited_on_another = False
        while True:
            lease = await credentials.try_lease(name, self._owner, self._lease_s)
            now = self._clock()
            if lease is not None:
                leased = lease.credential
                if not _needs_renewal(leased, now, stale, background=background):
                    await credentials.release(name, self._owner, problem=leased.problem)
                    return self._remember(key, leased)
                if waited_on_another and leased.problem is not None and not background:
                    # The renewal we waited for failed: report it rather than hammer WeChat again.
                    await credentials.release(name, self._owner, problem=leased.problem)
                    raise WeChatUnavailable(leased.problem)
                on_report = stale is not None and leased.valid_at(now) and _same(leased.value, stale)
                return await self._fetch_under_lease(
                    key, fetch, taken_over=lease.taken_over, reported=stale if on_report else None
                )
            current = await credentials.get(name)
            if current is not None and not _needs_renewal(current, now, stale, background=background):
                return self._remember(key, current)
            if current is not None and current.blocked_until is not None and current.blocked_until > now:
                raise _quota_error(key)
            if now > deadline:
                raise WeChatUnavailable(f"the renewal of {key.kind} token by another replica did not finish")
            waited_on_another = True
            await asyncio.sleep(self._rng.uniform(0.03, 0.12))

    async def _fetch_under_lease(
        self, key: CredentialKey, fetch: Fetch, *, taken_over: bool, reported: str | None = None
    ) -> Token:
        """Fetch and save under the lease; ``reported``: the stored value a caller called stale, whose
        renewal starts the spacing (`STALE_RENEWAL_SPACING_S`) once it is saved."""
        name = str(key)
        heartbeat = asyncio.ensure_future(self._hold_lease(name))
        try:
            fetched = await fetch()
        except Refused as exc:
            self._count_renewal(key, exc.code)
            await self._store.credentials.release(name, self._owner, problem=exc.message[:200])
            raise
        except UpstreamError as exc:
            refusal = _refusal(key, exc)
            self._count_renewal(key, refusal.code)
            blocked = None
            if exc.errcode == QUOTA_ERRCODE:
                blocked = _next_beijing_midnight(self._clock())
                if self._metrics is not None:
                    self._metrics.quota_errors.labels(key.platform_id, exc.api).inc()
            await self._store.credentials.release(
                name, self._owner, problem=str(exc)[:200], blocked_until=blocked
            )
            raise refusal from None
        except UpstreamUnavailable as exc:
            self._count_renewal(key, "wechat_unavailable")
            await self._store.credentials.release(name, self._owner, problem=str(exc)[:200])
            raise WeChatUnavailable(str(exc)) from None
        except BaseException:
            await asyncio.shield(self._store.credentials.release(name, self._owner))
            raise
        finally:
            heartbeat.cancel()
        self._count_renewal(key, "ok")
        now = self._clock()
        lifetime = max(1, fetched.expires_in)
        expires_at = now + lifetime
        renew_after = self._renew_after(now, lifetime)
        if taken_over:
            # The dead holder's call may still have reached WeChat after ours, making our token the
            # older one; renew again while WeChat's overlap for old tokens surely lasts.
            renew_after = min(renew_after, now + TAKEOVER_RENEWAL_S)
        saved = await self._store.credentials.save(
            name, self._owner, fetched.value, expires_at=expires_at, renew_after=renew_after
        )
        if not saved:
            # Our lease was lost (the database stalled past it): whoever took over decides the value.
            log.warning("lease on %s was lost during the fetch; the stored value stands", key)
            stored = await self._store.credentials.get(name)
            if stored is not None and stored.valid_at(now):
                return self._remember(key, stored)
        elif reported is not None:
            unchanged = _digest(reported) if _same(fetched.value, reported) else None
            self._stale_renewed[name] = _ReportRenewal(now, unchanged)
        log.info("renewed %s, valid %ss", key, lifetime)
        token = Token(key.platform_id, fetched.value, expires_at)
        self._cache[name] = _Cached(token, min(now + self._cache_s, renew_after))
        return token

    def _renew_after(self, now: float, lifetime: int) -> float:
        """Ahead of expiry by 5-10 minutes (less for short-lived tokens), jittered so replicas and
        platforms spread their renewals."""
        return now + lifetime - min(self._rng.uniform(300, 600), lifetime * self._rng.uniform(0.1, 0.2))

    def _count_renewal(self, key: CredentialKey, outcome: str) -> None:
        """``outcome``: ``ok`` or the API error code the renewal ended with (a bounded set)."""
        if self._metrics is not None:
            self._metrics.renewals.labels(key.kind, key.platform_id, outcome).inc()

    async def _hold_lease(self, name: str) -> None:
        """Keep extending the lease while a fetch (with its retries) is slower than the lease."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            if not await self._store.credentials.extend(name, self._owner, self._lease_s):
                return

    def _remember(self, key: CredentialKey, stored: StoredCredential) -> Token:
        """Hand out (and cache briefly) a stored value that ``valid_at`` accepted."""
        expires_at = stored.expires_at or 0.0
        token = Token(key.platform_id, stored.value or "", expires_at)
        horizon = stored.renew_after if stored.renew_after is not None else expires_at
        self._cache[str(key)] = _Cached(token, min(self._clock() + self._cache_s, horizon))
        return token

    # --- fetching from WeChat -----------------------------------------------------------------------

    async def _fetch_component(self, platform: Platform) -> FetchedToken:
        ticket = await self._store.ticket(platform.id)
        if ticket is None:
            raise TicketMissing(platform.id, f"platform '{platform.id}' has no component_verify_ticket yet")
        if self._clock() - ticket.received_at > TICKET_LIFETIME_S:
            raise TicketMissing(
                platform.id, f"the verify ticket of platform '{platform.id}' is older than 12 h"
            )
        if self._rejected_tickets.get(platform.id) == ticket.ticket:
            raise TicketMissing(
                platform.id, f"WeChat refused the verify ticket of '{platform.id}'; waiting for the next push"
            )
        try:
            return await self._wechat.component_token(
                platform.component_appid,
                platform.component_appsecret.reveal(),
                ticket.ticket,
                platform_id=platform.id,
            )
        except UpstreamError as exc:
            if exc.errcode in TICKET_ERRCODES:
                self._rejected_tickets[platform.id] = ticket.ticket
                raise TicketMissing(
                    platform.id,
                    f"WeChat refused the verify ticket of '{platform.id}' ({exc.errcode}); "
                    "waiting for the next push",
                ) from None
            raise

    async def _fetch_authorizer(self, platform: Platform, appid: str) -> FetchedToken:
        found = await self._store.authorizations.get_with_refresh_token(platform.id, appid)
        if found is None:
            raise AuthorizerUnknown(appid, f"{appid} has not authorized platform '{platform.id}'")
        authorization, refresh_token = found
        if authorization.status == "revoked":
            raise AuthorizationRevoked(appid, f"{appid} revoked its authorization of '{platform.id}'")
        if authorization.status == "reauthorization_required" or refresh_token is None:
            raise _reauthorization_required(platform.id, appid)
        component = await self.component_client(platform.id)
        try:
            fetched = await self._authorizer_call(platform, component, appid, refresh_token)
        except UpstreamError as exc:
            if exc.errcode != REFRESH_TOKEN_INVALID:
                raise
            recovered = await self._recover_refresh_token(platform, component, appid, refresh_token)
            if recovered is None:
                await self._store.authorizations.set_status(platform.id, appid, "reauthorization_required")
                raise _reauthorization_required(platform.id, appid) from None
            fetched = await self._authorizer_call(platform, component, appid, recovered)
            refresh_token = recovered
        if fetched.refresh_token and fetched.refresh_token != refresh_token:
            await self._store.authorizations.set_refresh_token(platform.id, appid, fetched.refresh_token)
        return fetched

    async def _authorizer_call(
        self, platform: Platform, component: BoundClient, appid: str, refresh_token: str
    ) -> FetchedToken:
        try:
            return await component.authorizer_token(platform.component_appid, appid, refresh_token)
        except UpstreamError as exc:
            if exc.errcode == NOT_AUTHORIZED:
                await self._store.authorizations.set_status(platform.id, appid, "revoked")
                raise AuthorizationRevoked(
                    appid, f"WeChat says {appid} no longer authorizes '{platform.id}'"
                ) from None
            raise

    async def _recover_refresh_token(
        self, platform: Platform, component: BoundClient, appid: str, rejected: str
    ) -> str | None:
        """61023: look for the current refresh token in api_get_authorizer_list."""
        offset, total = 0, 1
        while offset < total:
            total, page = await component.authorizer_list(platform.component_appid, offset)
            for item in page:
                if item.authorizer_appid == appid:
                    if item.refresh_token and item.refresh_token != rejected:
                        log.info(
                            "recovered the refresh token of %s on %s from the authorizer list",
                            appid,
                            platform.id,
                        )
                        await self._store.authorizations.set_refresh_token(
                            platform.id, appid, item.refresh_token
                        )
                        return item.refresh_token
                    return None
            if not page:
                break
            offset += len(page)
        return None

    async def _fetch_jsapi(self, platform_id: str, appid: str) -> FetchedToken:
        return await (await self.authorizer_client(platform_id, appid)).jsapi_ticket()

    def _platform(self, platform_id: str) -> Platform:
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        return platform


def _needs_renewal(stored: StoredCredential, now: float, stale: str | None, *, background: bool) -> bool:
    if not stored.valid_at(now):
        return True
    if stale is not None and _same(stored.value, stale):
        return True
    return background and stored.renew_after is not None and stored.renew_after <= now


def _same(stored: str | None, reported: str) -> bool:
    """Whether a caller's report names the stored value (compared in constant time: it is a secret)."""
    return stored is not None and hmac.compare_digest(stored.encode(), reported.encode())


def _digest(value: str) -> bytes:
    """What this process keeps of a value reported stale: enough to recognise it, not the value."""
    return hashlib.sha256(value.encode()).digest()


def _next_beijing_midnight(now: float) -> float:
    """WeChat's daily quotas turn over at midnight China Standard Time."""
    local = now + BEIJING_UTC_OFFSET_S
    return (math.floor(local / 86400) + 1) * 86400 - BEIJING_UTC_OFFSET_S


def _quota_error(key: CredentialKey) -> QuotaExhausted:
    return QuotaExhausted(
        key.platform_id,
        f"WeChat's daily quota for the {key.kind} token of '{key.platform_id}' is used up (45009); "
        "calls pause until the quota is cleared or the day turns",
    )


def _reauthorization_required(platform_id: str, appid: str) -> ReauthorizationRequired:
    return ReauthorizationRequired(
        appid,
        f"WeChat no longer accepts the refresh token of {appid} on '{platform_id}' (61023); "
        "its administrator must authorize the platform again",
    )


def _refusal(key: CredentialKey, exc: UpstreamError) -> QuotaExhausted | WeChatUnavailable:
    if exc.errcode == QUOTA_ERRCODE:
        return _quota_error(key)
    return WeChatUnavailable(f"WeChat refused the {key.kind} token ({exc.errcode} {exc.errmsg})")
