"""Authorizations: acting on authorization events, exchanging codes, and routing calls to a platform.

Events recorded by the intake are claimed by one replica at a time (a claim that lapses when its holder
dies), acted upon, and marked processed. A code is exchanged once: the redirect and the ``authorized``
event carry the same one, so whichever arrives first claims it in the store before its one api_query_auth
(on any replica), and the other waits for that outcome and reports it. An exchange whose answer was lost
is never resent (the code may be consumed: WeChat answers a reuse 61009); the event, which names the
account, reads the authorization back with api_get_authorizer_info instead (protocol §10; SPEC §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

import msgspec

from gateway.credentials.single_flight import SingleFlight
from gateway.credentials.tokens import TokenService
from gateway.errors import (
    InvalidInput,
    OutcomeUnknown,
    PlatformUnknown,
    Refused,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.store import RecordedEvent, Store
from gateway.store.audit_trail import AuditTrail
from gateway.store.authorizations import CodeClaim, Profile, StoredAuthorization
from gateway.store.database import STORE_UNAVAILABLE
from gateway.wechat.client import AuthorizerProfile
from gateway.wechat.routing import Grant, choose_platform
from gateway.xml import Authorized, FastRegister, Unauthorized, UpdateAuthorized

__all__ = ["AUTH_CODE_MAX_LENGTH", "AuthorizationService", "auth_code_problem", "profile_of"]

log = logging.getLogger(__name__)

CODE_REFUSED = frozenset({61009, 61010})  # invalid or expired: retrying cannot help
CODE_USED = 61009
NOT_AUTHORIZED = 61003  # api_get_authorizer_info: the account holds no authorization of this component
EVENT_CLAIM_S = 60.0
# How long a code's claim holds without its holder finishing: past one api_query_auth (sent once, at
# most the upstream client's timeouts) and the writes after it, so only a dead or hung holder loses it.
CODE_CLAIM_S = 30.0
CODE_POLL_S = 0.1  # how often an arrival that lost the claim looks for the holder's outcome
MAX_RETRY_DELAY_S = 300.0
# An auth_code's shape, checked before it is claimed or sent: the redirect page is open to anyone and every
# claim leaves a row. WeChat's codes look like "queryauthcode@@@…" (protocol §3), but that prefix is not
# documented, so only the length and the characters are checked (printable ASCII, no whitespace).
AUTH_CODE_MAX_LENGTH = 512


def auth_code_problem(code: str) -> str | None:
    """Why ``code`` cannot be an authorization code, or None when its shape is acceptable."""
    if not code:
        return "the authorization code is empty"
    if len(code) > AUTH_CODE_MAX_LENGTH:
        return f"the authorization code is longer than {AUTH_CODE_MAX_LENGTH} characters"
    if not all("!" <= c <= "~" for c in code):
        return "the authorization code holds characters other than printable ASCII without spaces"
    return None


class AuthorizationService(ReadsRegistry):
    """Which authorizer granted which platform what, kept current from WeChat's events."""

    def __init__(
        self,
        registry: LiveRegistry,
        store: Store,
        tokens: TokenService,
        audit: AuditTrail,
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = 2.0,
        owner: str | None = None,
        code_claim_s: float = CODE_CLAIM_S,
    ) -> None:
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._code_claim_s = code_claim_s
        self._live = registry
        self._store = store
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

    def _choose(self, appid: str, grants: list[Grant], api_path: str | None) -> str:
        registry = self._registry  # one registry for the order and the pins, whatever a reload does
        return choose_platform([p.id for p in registry.platforms], registry.pins, appid, grants, api_path)

    # --- codes and events ---------------------------------------------------------------------------

    async def exchange_code(
        self, platform_id: str, code: str, *, actor: str, authorizer_appid: str | None = None
    ) -> StoredAuthorization | None:
        """Exchange an authorization code (api_query_auth, sent once) and store the authorization.

        None when the code was exchanged before (here or by another replica; an arrival that finds the
        code claimed waits for the holder's outcome). ``authorizer_appid`` (the event names it) lets an
        exchange whose answer was lost be read back with api_get_authorizer_info. Raises UpstreamError
        (61009/61010 for a bad code), OutcomeUnknown (sent, answer lost, nothing to read it back
        with), UpstreamUnavailable or a `Refused` (no component token; `InvalidInput` for a malformed
        code, neither claimed nor sent) otherwise.
        """
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        problem = auth_code_problem(code)
        if problem is not None:
            raise InvalidInput("auth_code", problem)
        settled = await self._store.authorizations.code_claim(code)
        if settled is not None and settled.state == "exchanged":
            return None
        component = await self._tokens.component_client(platform_id)
        claim = await self._claim_code(platform_id, code)
        if not claim.won:
            return await self._outcome_of(claim, platform_id, code, actor, authorizer_appid)
        try:
            info = await component.query_auth(platform.component_appid, code)
        except OutcomeUnknown as exc:
            await self._store.authorizations.code_unknown(code, self._owner, exc.reason)
            if authorizer_appid is None:
                raise
            log.warning("%s; reading the authorization of %s back", exc, authorizer_appid)
            return await self._read_back(platform_id, code, authorizer_appid, actor)
        except UpstreamError as exc:
            if exc.errcode not in CODE_REFUSED:  # a refusal of the call, not of the code: it stays usable
                await self._store.authorizations.release_code(code, self._owner)
                raise
            return await self._code_refused(claim, platform_id, code, exc, actor, authorizer_appid)
        except UpstreamUnavailable:  # not sent (refused connection, open breaker): the code is unused
            await self._store.authorizations.release_code(code, self._owner)
            raise
        stored = await self._store.authorizations.authorize(
            platform_id, info.authorizer_appid, info.authorizer_refresh_token, info.func_ids
        )
        await self._tokens.adopt_authorizer_token(
            platform_id, info.authorizer_appid, info.authorizer_access_token, info.expires_in
        )
        await self._store.authorizations.code_exchanged(code, platform_id, info.authorizer_appid)
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

    async def _claim_code(self, platform_id: str, code: str) -> CodeClaim:
        """Claim ``code``, or wait while another arrival holds it (here or on another replica): the
        claim won, or the code's row once it is no longer being exchanged."""
        deadline = time.monotonic() + self._code_claim_s + 5 * CODE_POLL_S
        while True:
            claim = await self._store.authorizations.claim_code(
                code, platform_id, self._owner, self._code_claim_s
            )
            if claim.won or claim.state != "claimed":
                return claim
            if time.monotonic() > deadline:  # the holder's lease should have lapsed by now
                raise UpstreamUnavailable(
                    "api_query_auth", "another exchange of this code is still under way"
                )
            await asyncio.sleep(CODE_POLL_S)

    async def _outcome_of(
        self, claim: CodeClaim, platform_id: str, code: str, actor: str, authorizer_appid: str | None
    ) -> StoredAuthorization | None:
        """What an arrival that did not exchange the code answers: the other's outcome."""
        if claim.state == "exchanged":
            return None
        if claim.state == "refused":
            raise UpstreamError("api_query_auth", claim.errcode or CODE_USED, claim.problem or "code refused")
        # unknown: sent once, its answer lost; the code may be consumed, so it is not sent again
        if authorizer_appid is None:
            reason = "an exchange of this code got no answer; the authorized notice will complete it"
            raise OutcomeUnknown("api_query_auth", reason)
        return await self._read_back(platform_id, code, authorizer_appid, actor)

    async def _code_refused(
        self,
        claim: CodeClaim,
        platform_id: str,
        code: str,
        refusal: UpstreamError,
        actor: str,
        authorizer_appid: str | None,
    ) -> StoredAuthorization | None:
        """61009/61010. A reuse (61009) after the other arrival stored the authorization is success; after
        taking over a lapsed claim it may be the dead holder's use, so the outcome is unknown."""
        if refusal.errcode == CODE_USED:
            now = await self._store.authorizations.code_claim(code)
            if now is not None and now.state == "exchanged":
                return None
            if claim.resumed:
                await self._store.authorizations.code_unknown(code, self._owner, "61009 after a lapsed claim")
                return await self._outcome_of(
                    msgspec.structs.replace(claim, state="unknown"),
                    platform_id,
                    code,
                    actor,
                    authorizer_appid,
                )
        await self._store.authorizations.code_refused(code, self._owner, refusal.errcode, refusal.errmsg)
        raise refusal

    async def _read_back(self, platform_id: str, code: str, appid: str, actor: str) -> StoredAuthorization:
        """Complete an exchange whose answer was lost from what WeChat says of the authorization now
        (api_get_authorizer_info, a read: retried as reads are). Raises OutcomeUnknown if it cannot."""
        platform = self._registry.platform(platform_id)
        if platform is None:
            raise PlatformUnknown(platform_id)
        try:
            component = await self._tokens.component_client(platform_id)
            details = await component.authorizer_details(platform.component_appid, appid)
        except (Refused, UpstreamUnavailable) as exc:
            raise OutcomeUnknown("api_query_auth", f"reading it back failed too: {exc}") from None
        if details.refresh_token is None:
            raise OutcomeUnknown(
                "api_query_auth", "WeChat's account of the authorization has no refresh token"
            )
        stored = await self._store.authorizations.authorize(
            platform_id, appid, details.refresh_token, details.func_ids
        )
        await self._store.authorizations.code_exchanged(code, platform_id, appid)
        # The lost exchange may have replaced the account's token at WeChat (a re-authorization can end
        # the old one at once): fetch a fresh one from the refresh token when next needed.
        await self._tokens.forget_authorizer(platform_id, appid)
        self.forget_grants(appid)
        await self._store.authorizations.save_profile(profile_of(appid, details.profile))
        self._audit.record(
            actor,
            "authorization.granted",
            platform_id=platform_id,
            authorizer_appid=appid,
            detail="read back after a lost exchange; func_ids "
            + ",".join(str(i) for i in sorted(details.func_ids)),
        )
        log.info("authorization of %s by %s read back after a lost exchange", platform_id, appid)
        return stored

    async def refresh_profile(self, platform_id: str, appid: str) -> Profile | None:
        """Ask WeChat about the account (api_get_authorizer_info) and keep the answer for the catalog;
        on failure the previous profile stays and is returned."""
        platform = self._registry.platform(platform_id)
        if platform is None:
            return None
        try:
            component = await self._tokens.component_client(platform_id)
            info = await component.authorizer_info(platform.component_appid, appid)
        except (Refused, UpstreamError, UpstreamUnavailable) as exc:
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
                    recorded.platform_id,
                    event.authorization_code,
                    actor="wechat",
                    authorizer_appid=event.authorizer_appid,
                )
                return "already exchanged" if stored is None else f"{event.authorizer_appid} authorized"
            case FastRegister() if event.status == 0 and event.auth_code:
                stored = await self.exchange_code(
                    recorded.platform_id, event.auth_code, actor="wechat", authorizer_appid=event.appid
                )
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
                if exc.errcode in CODE_REFUSED or exc.errcode == NOT_AUTHORIZED:
                    await self._store.mark_processed(recorded.id, f"code refused by WeChat ({exc.errcode})")
                    continue
                await self._defer(recorded, str(exc))
            except (UpstreamUnavailable, Refused) as exc:
                if isinstance(exc, InvalidInput):  # a malformed code: retrying cannot help
                    await self._store.mark_processed(recorded.id, exc.message[:200])
                    continue
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
