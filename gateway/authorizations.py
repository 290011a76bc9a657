"""Authorizations: acting on authorization events, exchanging codes, and routing calls to a platform.

Events recorded by the intake are claimed by one replica at a time (a claim that lapses when its holder
dies), acted upon, and marked processed. A code is exchanged once: the redirect and the ``authorized``
event carry the same one, and its second arrival is treated as already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.audit import AuditTrail
from gateway.concurrency import SingleFlight
from gateway.errors import ApiError, UpstreamError, UpstreamUnavailable
from gateway.events import Authorized, FastRegister, Unauthorized, UpdateAuthorized
from gateway.live_registry import LiveRegistry, ReadsRegistry
from gateway.routing import Grant, choose_platform
from gateway.store import RecordedEvent, Store
from gateway.store.authorizations import Profile, StoredAuthorization
from gateway.store.database import STORE_UNAVAILABLE
from gateway.tokens import TokenService
from gateway.wechat import AuthorizerProfile, WeChatClient

__all__ = ["AuthorizationService", "profile_of"]

log = logging.getLogger(__name__)

CODE_REFUSED = frozenset({61009, 61010})  # invalid or expired: retrying cannot help
EVENT_CLAIM_S = 60.0
MAX_RETRY_DELAY_S = 300.0


class AuthorizationService(ReadsRegistry):
    """Which authorizer granted which platform what, kept current from WeChat's events."""

    def __init__(
        self,
        registry: LiveRegistry,
        store: Store,
        wechat: WeChatClient,
        tokens: TokenService,
        audit: AuditTrail,
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = 2.0,
    ) -> None:
        self._live = registry
        self._store = store
        self._wechat = wechat
        self._tokens = tokens
        self._audit = audit
        self._clock = clock
        self._cache_s = cache_s
        self._grants: dict[str, tuple[float, list[Grant]]] = {}
        self._reads: SingleFlight[str, list[Grant]] = SingleFlight()  # one store read per lapsed entry
        self._wake = asyncio.Event()

    # --- routing ------------------------------------------------------------------------------------

    async def grants(self, appid: str) -> list[Grant]:
        """The authorizer's grants, briefly cached (changes made here clear the cache at once)."""
        now = self._clock()
        cached = self._grants.get(appid)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            # When an entry lapses, every request in flight for the account would read the store: one does.
            return await self._reads.run(appid, lambda: self._load_grants(appid, now))
        except STORE_UNAVAILABLE:
            if cached is not None:  # the database is restarting: the last grants known beat a refusal
                return cached[1]
            raise

    async def _load_grants(self, appid: str, now: float) -> list[Grant]:
        stored = await self._store.authorizations.for_authorizer(appid)
        grants = [Grant(a.platform_id, a.func_ids, a.status) for a in stored]
        self._grants[appid] = (now + self._cache_s, grants)
        return grants

    def forget_grants(self, appid: str) -> None:
        """Drop the cached grants of ``appid`` (after a change made elsewhere)."""
        self._grants.pop(appid, None)

    async def route(self, appid: str, api_path: str | None) -> str:
        """The platform that serves ``appid`` for ``api_path`` (None: any API, as for token vending)."""
        return self._choose(appid, await self.grants(appid), api_path)

    def route_from_memory(self, appid: str, api_path: str | None) -> str | None:
        """What `route` answers, when the grants are cached and fresh; None when they are not (nothing is
        read). Raises as `route` does."""
        cached = self._grants.get(appid)
        if cached is None or cached[0] <= self._clock():
            return None
        return self._choose(appid, cached[1], api_path)

    def _choose(self, appid: str, grants: list[Grant], api_path: str | None) -> str:
        registry = self._registry  # one registry for the order and the pins, whatever a reload does
        return choose_platform([p.id for p in registry.platforms], registry.pins, appid, grants, api_path)

    # --- codes and events ---------------------------------------------------------------------------

    async def exchange_code(self, platform_id: str, code: str, *, actor: str) -> StoredAuthorization | None:
        """Exchange an authorization code (api_query_auth) and store the authorization.

        None when the code was exchanged before. Raises UpstreamError (61009/61010 for a bad code),
        UpstreamUnavailable or ApiError (no component token) otherwise.
        """
        if await self._store.authorizations.code_exchanged(code):
            return None
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise ApiError(404, "platform_unknown", f"no platform '{platform_id}' in the registry")
        component = await self._tokens.component_token(platform_id)
        info = await self._wechat.query_auth(component.value, platform.component_appid, code)
        stored = await self._store.authorizations.authorize(
            platform_id, info.authorizer_appid, info.authorizer_refresh_token, info.func_ids
        )
        await self._tokens.adopt_authorizer_token(
            platform_id, info.authorizer_appid, info.authorizer_access_token, info.expires_in
        )
        await self._store.authorizations.remember_code(code, platform_id, info.authorizer_appid)
        self.forget_grants(info.authorizer_appid)
        await self.refresh_profile(platform_id, info.authorizer_appid)
        self._audit.record(
            actor,
            "authorization.granted",
            platform_id=platform_id,
            authorizer_appid=info.authorizer_appid,
            detail="func_ids " + ",".join(str(i) for i in sorted(info.func_ids)),
        )
        log.info("authorization of %s by %s stored", platform_id, info.authorizer_appid)
        return stored

    async def refresh_profile(self, platform_id: str, appid: str) -> Profile | None:
        """Ask WeChat about the account (api_get_authorizer_info) and keep the answer for the catalog;
        on failure the previous profile stays and is returned."""
        platform = self._registry.platform(platform_id)
        if platform is None:
            return None
        try:
            component = await self._tokens.component_token(platform_id)
            info = await self._wechat.authorizer_info(component.value, platform.component_appid, appid)
        except (ApiError, UpstreamError, UpstreamUnavailable) as exc:
            log.warning("profile of %s not refreshed: %s", appid, exc)
            return await self._store.authorizations.profile(appid)
        return await self._store.authorizations.save_profile(profile_of(appid, info))

    async def revoke(self, platform_id: str, appid: str, *, actor: str) -> None:
        """The authorization was revoked: keep the row for the catalog, drop its tokens."""
        await self._store.authorizations.set_status(platform_id, appid, "revoked")
        await self._tokens.forget_authorizer(platform_id, appid)
        self.forget_grants(appid)
        self._audit.record(actor, "authorization.revoked", platform_id=platform_id, authorizer_appid=appid)
        log.info("authorization of %s by %s revoked", platform_id, appid)

    def wake(self) -> None:
        """Tell the worker a new event is waiting."""
        self._wake.set()

    async def handle(self, recorded: RecordedEvent) -> str:
        """Act on one authorization event; returns a short outcome for the record."""
        event = recorded.event
        match event:
            case Authorized() | UpdateAuthorized():
                stored = await self.exchange_code(
                    recorded.platform_id, event.authorization_code, actor="wechat"
                )
                return "already exchanged" if stored is None else f"{event.authorizer_appid} authorized"
            case FastRegister() if event.status == 0 and event.auth_code:
                stored = await self.exchange_code(recorded.platform_id, event.auth_code, actor="wechat")
                return "already exchanged" if stored is None else f"{event.appid} registered and authorized"
            case FastRegister():
                return f"fast registration failed with status {event.status}: {event.msg}"[:200]
            case Unauthorized():
                await self.revoke(recorded.platform_id, event.authorizer_appid, actor="wechat")
                return f"{event.authorizer_appid} revoked"
            case _:
                return "nothing to do"

    async def process_pending(self) -> int:
        """Claim and act on pending events; returns how many were handled or deferred."""
        events = await self._store.claim_authorization_events(EVENT_CLAIM_S)
        for recorded in events:
            try:
                outcome = await self.handle(recorded)
            except UpstreamError as exc:
                if exc.errcode in CODE_REFUSED:
                    await self._store.mark_processed(recorded.id, f"code refused by WeChat ({exc.errcode})")
                    continue
                await self._defer(recorded, str(exc))
            except (UpstreamUnavailable, ApiError) as exc:
                await self._defer(recorded, str(exc))
            else:
                await self._store.mark_processed(recorded.id, outcome)
        return len(events)

    async def _defer(self, recorded: RecordedEvent, reason: str) -> None:
        delay = min(MAX_RETRY_DELAY_S, 2.0 * 2 ** min(recorded.attempts, 10))
        log.warning("authorization event %s deferred %.0fs: %s", recorded.id, delay, reason)
        await self._store.defer_event(recorded.id, self._clock() + delay, reason)

    async def run_worker(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        """Act on events as they arrive (woken by the intake) and every ``interval_s`` until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.process_pending()
            except Exception:  # a database hiccup must not end the worker
                log.exception("authorization event pass failed")
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({waiter, stopper}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()


def profile_of(appid: str, info: AuthorizerProfile) -> Profile:
    """What the store keeps of api_get_authorizer_info's description of an account."""
    return Profile(
        authorizer_appid=appid,
        kind=info.kind,
        nick_name=info.nick_name,
        principal_name=info.principal_name,
        user_name=info.user_name,
        verify_type=info.verify_type_info.id,
        service_type=info.service_type_info.id,
        account_status=info.account_status,
    )
