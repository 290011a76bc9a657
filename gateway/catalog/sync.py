"""Catalog sync (SPEC §6): what WeChat says of every authorizer, brought into the store.

One sync, over every platform of the registry (or one):

1. The platform's ``api_get_authorizer_list``, paged 500 at a time. A list that cannot be read whole (no
   component token, WeChat failing) skips the platform, a problem in the summary.
2. One ``api_get_authorizer_info`` per (platform, authorizer), with bounded concurrency: for each listed
   authorizer, and for each the store holds as live that the list no longer has. The answer
   - creates the authorization the store did not know (the refresh token from the list, the permission
     sets from ``authorization_info``) and reactivates one the store had as revoked;
   - restores a refresh token the store lost, or one WeChat refused (61023), from the list;
   - keeps the permission sets current.
   61003 ("not authorized") marks the authorization revoked. So an authorization is revoked because WeChat
   says so of it, not merely because a list that may have shifted while it was paged left it out.
3. Once per authorizer with a live authorization: its profile (from the info above), then its binding:
   - open/get through the platform holding open-account management (24 / 25), via
     ``OpenBindingService.where_bound``; once every account is seen, its state by SPEC §11
     (`gateway.binding.plan`): ``bound``, ``bound_elsewhere``, ``unbound`` or ``console_binding_needed``;
   - else open/have through a platform holding account service (3) or basic info (30): ``unbound`` when it
     says the account has no open account. When it says it has one, it does not say WHICH, so the state
     is ``unknown`` (the summary counts these apart, as bound to an unidentified open account): ``bound``
     could hide an account bound elsewhere, and ``bound_elsewhere`` would be a false audit finding;
   - else ``unknown``: no platform may ask.

   Both calls need the account's authorizer token. Tokens nobody uses are left to lapse (SPEC §7), so
   reading every account's binding at every sync would mint a token for each idle account four times a
   day — many times what the accounts in use cost. So an account's binding is read when that is free or
   due: its token is valid anyway (the account is in use), or its authorization changed in this sync, or
   its binding was never read or was read ``binding_recheck_s`` ago or longer (default 7 days). Otherwise
   the stored binding stays, counted in ``bindings_kept``. What that costs: a binding changed outside the
   gateway (in the Open Platform console) on an idle account shows in the catalog within
   ``binding_recheck_s`` plus a sync interval instead of one sync interval; changes the gateway makes
   itself are recorded at once, and accounts in use are read at every sync as before.

Transient faults are retried by the upstream client (protocol §8); a component token WeChat calls stale is
renewed once and the call repeated; 45009 is surfaced, not hammered: after a few in a row on one platform
its remaining calls are skipped. A failure on one authorizer is a problem in the summary and stops nothing
else.

A sync runs ``TokenService.untracked``: its token uses do not keep the tokens warm (it touches every
account every few hours, so they would never lapse).

``run_schedule`` runs syncs inside ``serve``. Only the replica holding the ``job:catalog-sync`` lease (the
credentials lease that makes token renewal happen once) syncs; it keeps the lease until the next sync is
due, so the other replicas, and a restarted one, skip meanwhile; if it dies, the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from gateway.authorizations.service import AuthorizationService, profile_of
from gateway.binding.plan import Account
from gateway.binding.service import OPEN_API, OpenBindingService
from gateway.credentials.tokens import NOT_AUTHORIZED, QUOTA_ERRCODE, TokenService
from gateway.errors import (
    NoLiveAuthorization,
    PermissionSetMissing,
    PlatformUnknown,
    Refused,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import Platform
from gateway.settings import DEFAULT_BINDING_RECHECK_S
from gateway.store.audit_trail import AuditTrail
from gateway.store.authorizations import AuthorizationStore, Binding, Grant, Profile, StoredAuthorization
from gateway.store.credentials import CredentialStore
from gateway.wechat.client import AuthorizerDetails, bounded_calls

__all__ = ["DEFAULT_CONCURRENCY", "JOB_KEY", "CatalogSync", "SyncProblem", "SyncSummary", "Tracker"]

log = logging.getLogger(__name__)


# Stored binding states that say where the account is bound, or that it is bound nowhere (open/get, or
# open/have's "no open account"): a kept account in one of them is decided again without a call.
READ_STATES = frozenset({"bound", "bound_elsewhere", "unbound", "console_binding_needed"})
JOB_KEY = "job:catalog-sync"  # the credentials row whose lease says which replica syncs
DEFAULT_CONCURRENCY = 16
LIST_PAGE = 500  # api_get_authorizer_list's maximum count
QUOTA_STRIKES = 3  # 45009 answers in a row on one platform before its remaining calls are skipped
HOLD_FRACTION = 0.9  # of the interval: how long the syncing replica keeps the lease after a sync
ACTOR = "catalog-sync"  # in the audit log
HAVE_OPEN_API = "cgi-bin/open/have"
BATCH = 200  # authorizations, or profiles with their bindings, written per transaction

Tracker = Callable[[str, int], Callable[[], None]]
"""Starts a stage, given its label and how many items it has; returns what to call as each is done."""


class SyncProblem(msgspec.Struct, frozen=True):
    """Something a sync could not do, where: a platform, an authorizer, or both."""

    platform_id: str | None
    authorizer_appid: str | None
    problem: str


class SyncSummary(msgspec.Struct):
    """What one sync found and did."""

    platforms: list[str]
    authorizations: int = 0  # (platform, authorizer) pairs examined: listed, or stored live but unlisted
    authorizers: int = 0  # accounts with a live authorization: their profile and binding refreshed
    new: int = 0  # authorizations the store did not know
    updated: int = 0  # reactivated, permission sets changed, or WeChat's newer refresh token taken
    revoked: int = 0
    refresh_tokens_recovered: int = 0  # lost or refused (61023) refresh tokens replaced from the list
    reauthorization_required: int = 0  # live at WeChat, but with no refresh token the gateway can use
    bindings: dict[str, int] = msgspec.field(default_factory=dict)  # accounts per binding state
    bound_unidentified: int = 0  # of the "unknown": open/have says bound, to an open account it cannot name
    bindings_kept: int = 0  # idle accounts whose binding, read recently, was kept rather than read again
    problems: list[SyncProblem] = msgspec.field(default_factory=list)
    duration_s: float = 0.0

    @property
    def failures(self) -> int:
        """How many things the sync could not do."""
        return len(self.problems)


@dataclass(frozen=True)
class _Pair:
    """One (platform, authorizer) to examine, as the list and the store have it."""

    platform: Platform
    appid: str
    # The refresh token the list gave (None: not listed, or the list left it out) and the stored one;
    # secrets, so never in a repr.
    listed_token: str | None = field(repr=False)
    stored: StoredAuthorization | None
    stored_token: str | None = field(repr=False)


@dataclass
class _Run:
    """The state of one sync."""

    summary: SyncSummary
    gate: asyncio.Semaphore
    profiles: dict[str, Profile] = field(default_factory=dict)  # accounts confirmed live, by appid
    quota_strikes: Counter[str] = field(default_factory=Counter)  # 45009s in a row, by platform
    # What is learnt is written in batches (a transaction each) rather than one transaction per account:
    # authorizations to record (and whether to audit them as granted), profiles with their binding, and
    # profiles whose binding could not be checked (it stays as it was).
    grants: list[tuple[Grant, bool]] = field(default_factory=list)
    seen: list[tuple[Profile, tuple[str, str | None]]] = field(default_factory=list)
    surveyed: list[tuple[Profile, Binding]] = field(default_factory=list)
    unsurveyed: list[Profile] = field(default_factory=list)
    # Accounts whose binding was not due for a read, and those decided again from their stored binding.
    kept: list[Profile] = field(default_factory=list)
    redecided: list[tuple[Profile, Binding]] = field(default_factory=list)
    started: float = 0.0  # the sync's clock at its start
    changed: set[str] = field(default_factory=set)  # accounts with an authorization changed in this sync
    checked_at: dict[str, float | None] = field(default_factory=dict)  # when each binding was last read
    valid_tokens: set[str] = field(default_factory=set)  # authorizer credential keys valid at the start

    def problem(self, platform_id: str | None, appid: str | None, problem: str) -> None:
        self.summary.problems.append(SyncProblem(platform_id, appid, problem))
        log.warning("catalog sync: %s %s: %s", platform_id or "-", appid or "-", problem)


class CatalogSync(ReadsRegistry):
    """Brings the catalog up to date from WeChat: ``run`` once, or ``run_schedule`` inside ``serve``.

    ``owner`` names this process in the lease, ``lease_s`` bounds how long a dead replica holds it;
    ``binding_recheck_s`` how often the binding of an idle account is read all the same (0: every sync).
    """

    def __init__(
        self,
        registry: LiveRegistry,
        credentials: CredentialStore,
        records: AuthorizationStore,
        tokens: TokenService,
        authorizations: AuthorizationService,
        binding: OpenBindingService,
        audit: AuditTrail,
        *,
        owner: str,
        lease_s: float = 30.0,
        rng: random.Random | None = None,
        binding_recheck_s: float = DEFAULT_BINDING_RECHECK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = registry
        self._credentials = credentials
        self._records = records
        self._tokens = tokens
        self._authorizations = authorizations
        self._binding = binding
        self._audit = audit
        self._owner = owner
        self._lease_s = lease_s
        self._rng = rng or random.Random()
        self._binding_recheck_s = binding_recheck_s
        self._clock = clock

    # --- one sync -----------------------------------------------------------------------------------

    async def run(
        self,
        platform_id: str | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        track: Tracker | None = None,
    ) -> SyncSummary:
        """Sync every platform, or only ``platform_id`` (404 ``platform_unknown`` when the registry has
        none); at most ``concurrency`` WeChat calls at a time. ``track`` follows the stages' progress."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        with self._tokens.untracked():
            return await self._run(platform_id, concurrency, track)

    async def _run(self, platform_id: str | None, concurrency: int, track: Tracker | None) -> SyncSummary:
        if platform_id is None:
            platforms = list(self._registry.platforms)
        else:
            platform = self._registry.platform(platform_id)
            if platform is None:
                raise PlatformUnknown(platform_id)
            platforms = [platform]
        started = time.monotonic()
        # ``concurrency`` bounds the WeChat calls in flight; four times as many accounts are worked on at
        # once, so that one account's database work overlaps another's call instead of holding a slot.
        run = _Run(SyncSummary([p.id for p in platforms]), asyncio.Semaphore(4 * concurrency))
        run.started = self._clock()

        with bounded_calls(concurrency):
            listings = await asyncio.gather(*(self._pairs(p, run) for p in platforms))
            pairs = [pair for listing in listings for pair in listing]
            run.summary.authorizations = len(pairs)
            step = _stage(track, "authorizer info", len(pairs))
            await asyncio.gather(*(self._examine(pair, run, step) for pair in pairs))
            await self._write_grants(run, everything=True)

            appids = sorted(run.profiles)
            run.summary.authorizers = len(appids)
            if self._binding_recheck_s:
                run.checked_at = await self._records.bindings_checked_at()
                run.valid_tokens = await self._credentials.valid_keys("authorizer:", run.started)
            step = _stage(track, "open binding", len(appids))
            await asyncio.gather(*(self._survey(appid, run, step) for appid in appids))
            await self._settle_bindings(run)
            await self._write_surveys(run, everything=True)

        run.summary.duration_s = round(time.monotonic() - started, 3)
        summary = run.summary
        log.info(
            "catalog sync of %s: %d authorizations of %d authorizers, %d new, %d updated, %d revoked, "
            "%d refresh tokens recovered, %d failures in %.1fs",
            ", ".join(summary.platforms),
            summary.authorizations,
            summary.authorizers,
            summary.new,
            summary.updated,
            summary.revoked,
            summary.refresh_tokens_recovered,
            summary.failures,
            summary.duration_s,
        )
        return summary

    async def _pairs(self, platform: Platform, run: _Run) -> list[_Pair]:
        """The platform's listed authorizers and the live ones the store has beside them; none when the
        list cannot be read whole."""
        try:
            listed = await self._listing(platform)
        except (Refused, UpstreamError, UpstreamUnavailable) as exc:
            run.problem(platform.id, None, f"authorizer list: {_words(exc)}")
            return []
        stored = {a.authorizer_appid: (a, token) for a, token in await self._records.of_platform(platform.id)}
        pairs = [
            _Pair(platform, appid, token, *stored.get(appid, (None, None))) for appid, token in listed.items()
        ]
        pairs += [
            _Pair(platform, appid, None, authorization, token)
            for appid, (authorization, token) in stored.items()
            if appid not in listed and authorization.status != "revoked"
        ]
        return pairs

    async def _listing(self, platform: Platform) -> dict[str, str | None]:
        """Every authorizer of the platform's list, with the refresh token the list gives for it."""
        listed: dict[str, str | None] = {}
        component = await self._tokens.component_client(platform.id)
        offset, total = 0, 1
        while offset < total:
            total, page = await component.authorizer_list(platform.component_appid, offset, LIST_PAGE)
            for item in page:
                listed.setdefault(item.authorizer_appid, item.refresh_token)
            if not page:
                break
            offset += len(page)
        return listed

    async def _examine(self, pair: _Pair, run: _Run, step: Callable[[], None]) -> None:
        """One api_get_authorizer_info, and the stored authorization brought in line with its answer."""
        platform_id = pair.platform.id
        async with run.gate:
            try:
                if run.quota_strikes[platform_id] >= QUOTA_STRIKES:
                    run.problem(
                        platform_id,
                        pair.appid,
                        f"skipped: WeChat's daily quota for '{platform_id}' is used up (45009)",
                    )
                else:
                    await self._examine_one(pair, run)
            except (Refused, UpstreamError, UpstreamUnavailable) as exc:
                run.problem(platform_id, pair.appid, f"authorizer info: {_words(exc)}")
            step()
        await self._write_grants(run)

    async def _examine_one(self, pair: _Pair, run: _Run) -> None:
        platform = pair.platform
        try:
            component = await self._tokens.component_client(platform.id)
            details = await component.authorizer_details(platform.component_appid, pair.appid)
        except UpstreamError as exc:
            if exc.errcode == QUOTA_ERRCODE:
                run.quota_strikes[platform.id] += 1
            if exc.errcode != NOT_AUTHORIZED:
                raise
            if pair.stored is not None and pair.stored.status != "revoked":
                await self._authorizations.revoke(platform.id, pair.appid, actor=ACTOR)
                run.summary.revoked += 1
            return
        run.quota_strikes[platform.id] = 0
        await self._reconcile(pair, details, run)
        run.profiles.setdefault(pair.appid, profile_of(pair.appid, details.profile))

    async def _reconcile(self, pair: _Pair, details: AuthorizerDetails, run: _Run) -> None:
        """Bring the stored authorization in line with what WeChat just said of it."""
        records, summary = self._records, run.summary
        platform_id, appid, stored, held = pair.platform.id, pair.appid, pair.stored, pair.stored_token
        current = pair.listed_token or details.refresh_token  # WeChat's refresh token, when it gave one
        if stored is None or stored.status == "revoked":
            if current is None:
                run.problem(platform_id, appid, "WeChat gave no refresh token for this authorization")
                return
            run.grants.append((Grant(platform_id, appid, current, details.func_ids), True))
            run.changed.add(appid)
            if stored is None:
                summary.new += 1
            else:
                summary.updated += 1
        elif current is not None and current != held:
            # The stored refresh token was lost or refused (61023): recovered. Or WeChat's is newer (a
            # re-authorization whose event is still on its way): taken.
            run.grants.append((Grant(platform_id, appid, current, details.func_ids), False))
            run.changed.add(appid)
            if held is None or stored.status == "reauthorization_required":
                log.info(
                    "recovered the refresh token of %s on %s from the authorizer list", appid, platform_id
                )
                summary.refresh_tokens_recovered += 1
            else:
                summary.updated += 1
        elif held is None or stored.status == "reauthorization_required":
            # Nothing better than the refresh token WeChat refused, or none at all: the administrator has
            # to authorize again (the authorization stays as it is, visible in the catalog).
            if stored.status != "reauthorization_required":
                await records.set_status(platform_id, appid, "reauthorization_required")
            summary.reauthorization_required += 1
            return
        elif details.func_ids != stored.func_ids:
            run.grants.append((Grant(platform_id, appid, held, details.func_ids), False))
            run.changed.add(appid)
            summary.updated += 1

    async def _write_grants(self, run: _Run, *, everything: bool = False) -> None:
        """Record the queued authorizations, a batch at a time; all of them with ``everything``."""
        while len(run.grants) >= BATCH or (everything and run.grants):
            batch, run.grants = run.grants[:BATCH], run.grants[BATCH:]  # before awaiting: others queue on
            await self._records.authorize_many([grant for grant, _ in batch])
            for grant, granted in batch:
                self._authorizations.forget_grants(grant.authorizer_appid)
                if granted:
                    self._audit.record(
                        ACTOR,
                        "authorization.granted",
                        platform_id=grant.platform_id,
                        authorizer_appid=grant.authorizer_appid,
                        detail="func_ids " + ",".join(str(i) for i in sorted(grant.func_ids)),
                    )

    async def _survey(self, appid: str, run: _Run, step: Callable[[], None]) -> None:
        """Where the account is bound, queued with its profile; its state is decided once every account
        has been seen (`_settle_bindings`)."""
        profile = run.profiles[appid]
        async with run.gate:
            try:
                if await self._binding_due(appid, run):
                    run.seen.append((profile, await self._where_bound(appid, run)))
                else:  # where it is bound stays as stored; its state is decided again
                    run.summary.bindings_kept += 1
                    run.kept.append(profile)
            except (Refused, UpstreamError, UpstreamUnavailable) as exc:
                run.problem(None, appid, f"open binding: {_words(exc)}")
                run.unsurveyed.append(profile)
            step()

    async def _settle_bindings(self, run: _Run) -> None:
        """Each surveyed account's catalog state by SPEC §11 (`gateway.binding.plan`), decided over
        everything this sync saw; then written with the profiles.

        A kept account (its binding not due for a read) is decided again too, from the open account it
        was last seen on and its refreshed principal, with no call: a reload that changes
        ``group.binding`` changes its state and target at the next sync, not ``binding_recheck_s``
        later. Only a stored state that says where it is bound (or that it is bound nowhere) is decided
        again; ``unknown`` (open/have said it has an open account without naming it, nothing could ask,
        or its principal was unknown) stays as it is."""
        stored = {f.authorizer_appid: f for f in await self._records.binding_facts()} if run.kept else {}
        redecide: list[tuple[Profile, str | None]] = []
        for profile in run.kept:
            facts = stored.get(profile.authorizer_appid)
            if facts is not None and facts.binding in READ_STATES:
                redecide.append((profile, facts.open_appid))
            else:
                run.unsurveyed.append(profile)
        run.kept.clear()
        planner = await self._binding.planner(
            [
                *(
                    Account(p.authorizer_appid, p.principal_name or None, current)
                    for p, (how, current) in run.seen
                    if how == "open_get"
                ),
                *(Account(p.authorizer_appid, p.principal_name or None, current) for p, current in redecide),
            ]
        )
        for profile, (how, current) in run.seen:
            if how == "unknown":
                binding = Binding("unknown")
            else:
                decided = planner.step(profile.authorizer_appid, profile.principal_name or None, current)
                binding = Binding(decided.state, current, decided.target)
            run.summary.bindings[binding.state] = run.summary.bindings.get(binding.state, 0) + 1
            run.surveyed.append((profile, binding))
        run.seen.clear()
        for profile, current in redecide:
            decided = planner.step(profile.authorizer_appid, profile.principal_name or None, current)
            run.redecided.append((profile, Binding(decided.state, current, decided.target)))

    async def _write_surveys(self, run: _Run, *, everything: bool = False) -> None:
        """Record the queued profiles (with their bindings), a batch at a time; all with ``everything``."""
        records = self._records
        while len(run.surveyed) >= BATCH or (everything and run.surveyed):
            batch, run.surveyed = run.surveyed[:BATCH], run.surveyed[BATCH:]
            await records.save_profiles([profile for profile, _ in batch], [binding for _, binding in batch])
        while len(run.unsurveyed) >= BATCH or (everything and run.unsurveyed):
            profiles, run.unsurveyed = run.unsurveyed[:BATCH], run.unsurveyed[BATCH:]
            await records.save_profiles(profiles)
        while len(run.redecided) >= BATCH or (everything and run.redecided):
            batch, run.redecided = run.redecided[:BATCH], run.redecided[BATCH:]
            # Not read now: when its binding was last read stays, so that its recheck still comes.
            await records.save_profiles([p for p, _ in batch], [b for _, b in batch], read=False)

    async def _binding_due(self, appid: str, run: _Run) -> bool:
        """Whether to read the binding of ``appid`` now (see the module's docstring, step 3)."""
        if not self._binding_recheck_s or appid in run.changed:
            return True
        checked = run.checked_at.get(appid)
        if checked is None or run.started - checked >= self._binding_recheck_s:
            return True
        # Read recently: again only if the token it takes is valid anyway (a call, but no token call).
        for api in (OPEN_API, HAVE_OPEN_API):
            try:
                platform_id = await self._authorizations.route(appid, api)
            except PermissionSetMissing:
                continue
            except Refused:
                return True  # no live grant: reading asks WeChat nothing
            return f"authorizer:{platform_id}:{appid}" in run.valid_tokens
        return True  # no platform may ask: reading asks WeChat nothing

    async def _where_bound(self, appid: str, run: _Run) -> tuple[str, str | None]:
        """How the account's binding was read and what it said: (``open_get``, the open account or
        None), (``unbound``, None) from open/have, or (``unknown``, None) when nothing may ask."""
        try:
            return "open_get", await self._binding.where_bound(appid)  # open/get (24 / 25)
        except NoLiveAuthorization:
            return "unknown", None
        except PermissionSetMissing:
            return await self._have_open(appid, run), None

    async def _have_open(self, appid: str, run: _Run) -> str:
        """open/have through a platform holding set 3 or 30: ``unbound``, or ``unknown`` when the account
        has an open account it cannot name; ``unknown`` too when no platform holds either set."""
        try:
            platform_id = await self._authorizations.route(appid, HAVE_OPEN_API)
            authorizer = await self._tokens.authorizer_client(platform_id, appid)
        except (PermissionSetMissing, NoLiveAuthorization):
            return "unknown"
        if not await authorizer.open_have():
            return "unbound"
        run.summary.bound_unidentified += 1
        return "unknown"

    # --- on a schedule ------------------------------------------------------------------------------

    async def run_schedule(
        self, stop: asyncio.Event, interval_s: float, *, first_delay_s: float = 60.0
    ) -> None:
        """Sync every ``interval_s`` until ``stop``, on one replica at a time; the first attempt comes
        ``first_delay_s`` after start. Both are jittered so that replicas spread out."""
        delay = first_delay_s
        while not await _stopped_within(stop, delay * self._rng.uniform(0.8, 1.2)):
            try:
                await self._scheduled_sync(stop, interval_s)
            except Exception:  # the schedule must outlive any one failure (the database restarting, say)
                log.exception("scheduled catalog sync failed")
            delay = interval_s

    async def _scheduled_sync(self, stop: asyncio.Event, interval_s: float) -> None:
        """One sync under the lease, given up if ``stop`` comes first; the lease is then kept until the
        next sync is due (given up at once when the sync did not finish)."""
        credentials = self._credentials
        if await credentials.try_lease(JOB_KEY, self._owner, self._lease_s) is None:
            log.info("catalog sync skipped: another replica synced recently or is syncing")
            return
        heartbeat = asyncio.ensure_future(self._hold_lease())
        sync = asyncio.ensure_future(self.run())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sync, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, stopping, sync):
                task.cancel()  # a finished sync is not affected
            await asyncio.gather(heartbeat, stopping, sync, return_exceptions=True)
        if sync.cancelled():
            await credentials.release(JOB_KEY, self._owner)
            log.info("catalog sync stopped before it finished")
            return
        error = sync.exception()
        if error is not None:
            await credentials.release(JOB_KEY, self._owner)
            raise error
        await credentials.extend(JOB_KEY, self._owner, interval_s * HOLD_FRACTION)

    async def _hold_lease(self) -> None:
        """Keep extending the lease while the sync runs."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            if not await self._credentials.extend(JOB_KEY, self._owner, self._lease_s):
                log.warning("the catalog sync lease was lost while syncing")
                return


def _stage(track: Tracker | None, label: str, total: int) -> Callable[[], None]:
    return track(label, total) if track is not None else _nothing


def _nothing() -> None:
    """No progress to show."""


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; whether it came."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def _words(exc: Refused | UpstreamError | UpstreamUnavailable) -> str:
    return exc.message if isinstance(exc, Refused) else str(exc)
