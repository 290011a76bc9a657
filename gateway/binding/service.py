"""Open-account binding (SPEC §11, protocol §6): each authorizer to its principal's open account.

What to do for an account is decided in one place, `gateway.binding.plan` (pure); this service gathers
what it needs (where the account is bound, from open/get; its principal, from its profile; what the store
knows of the others and of the open accounts the gateway created) and carries the decision out.

Checking and binding go through the component holding open-account management (24 for an official
account, 25 for a mini program) for that authorizer, with its authorizer token. ``open/bind`` is sent
only where WeChat's API can succeed: never across principals (refused, ``principal_mismatch``: the Open
Platform console binds related principals), never to an unverified API-created open account that
already holds 5 (``open_account_full``). An account bound to another open account is reported
(``bound_elsewhere``, an audit finding), never unbound. open/bind and open/create change state at
WeChat: each is sent by one function here (`_send_bind`, `_send_create`), once, never retried blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import msgspec

from gateway.authorizations.service import AuthorizationService, profile_of
from gateway.binding.plan import Account, CreatedOpenAccount, Planner, Rules, Step
from gateway.credentials.tokens import TokenService
from gateway.errors import (
    BindingRefused,
    OutcomeUnknown,
    PermissionSetMissing,
    Refused,
    UpstreamError,
    UpstreamUnavailable,
    WeChatUnavailable,
)
from gateway.registry.live import LiveRegistry, ReadsRegistry
from gateway.registry.model import principal_key
from gateway.store.audit_trail import AuditTrail
from gateway.store.authorizations import AuthorizationStore
from gateway.store.credentials import CredentialStore
from gateway.store.open_accounts import OpenAccountStore
from gateway.wechat.client import BoundClient

__all__ = ["BindingState", "OpenBinding", "OpenBindingService", "PassResult", "PassRow"]

BindingState = Literal["bound", "newly_bound", "bound_elsewhere"]
T = TypeVar("T")
OPEN_API = "cgi-bin/open/get"  # any open/* path: they need the same sets (24 / 25)
# After a lost open/bind or open/create answer that open/get shows not applied, open/get is read once more
# this much later: WeChat may still have been processing the call (SPEC §4: "outcome unknown" until told).
READ_BACK_AGAIN_S = 1.0
NOT_BOUND_YET = "not bound as of open/get; outcome unknown; safe to retry after a short wait"

# WeChat's refusals of open/bind and open/create, in words.
_REFUSALS: dict[int, tuple[str, str]] = {
    89000: ("already_bound", "the account is already bound to an open account"),
    89001: ("principal_mismatch", "the account and the open account do not have the same principal"),
    89003: ("open_account_not_api_created", "the open account was not created through the API"),
    89004: ("open_account_full", "the open account has reached its limit of bound accounts"),
    89036: (
        "open_account_not_api_created",
        "the open account is unverified and was not created through the API, so the API cannot bind to it",
    ),
}


class OpenBinding(msgspec.Struct, frozen=True):
    """``POST /v1/authorizers/{appid}/open-binding``: the state, and the open account it is bound to."""

    state: BindingState
    open_appid: str | None


def principal_claim(principal: str) -> str:
    """The lease key held around an open/create for ``principal`` (hashed: names run to 200 characters)."""
    return "binding:principal:" + hashlib.sha256(principal_key(principal).encode()).hexdigest()[:40]


def open_account_claim(open_appid: str) -> str:
    """The lease key held around a bind to ``open_appid`` while its 5-account cap is counted."""
    return f"binding:open:{open_appid}"


def _principal_unknown(appid: str) -> BindingRefused:
    return BindingRefused(
        "principal_unknown",
        f"the principal of {appid} is not known yet (api_get_authorizer_info): open/create copies it, "
        "so nothing was created; run `gateway catalog sync` and retry",
    )


class _Claims:
    """Database leases (the credentials table's, as token renewal takes them) held while one account's
    binding is decided again and carried out.

    WeChat gives two open/create calls of one principal two different open accounts (protocol §6 rule 2),
    and counts an unverified API-made one's 5 accounts itself (89004). So whoever creates for a principal
    holds ``principal_claim`` and whoever binds to a capped open account holds ``open_account_claim``;
    each decides on what the store says once it holds them. Across tasks, the API, a pass and replicas,
    the second account of a principal then binds to the open account the first made, and the sixth bind
    to a capped one is refused before calling. A holder that dies loses its lease after ``lease_s``."""

    def __init__(self, credentials: CredentialStore, lease_s: float, wait_s: float) -> None:
        self._credentials = credentials
        self._owner = f"binding:{secrets.token_hex(12)}"  # one per claim set: tasks of a process contend
        self._lease_s = lease_s
        self._wait_s = wait_s
        self.held: list[str] = []
        self._heartbeat: asyncio.Future[None] | None = None

    async def take(self, key: str) -> None:
        """Wait for the lease on ``key`` (its holder releases it, or it lapses); `WeChatUnavailable` after
        ``wait_s``."""
        deadline = time.monotonic() + self._wait_s
        pause = 0.02
        while await self._credentials.try_lease(key, self._owner, self._lease_s) is None:
            if time.monotonic() >= deadline:
                raise WeChatUnavailable(
                    f"another binding of the same {'principal' if ':principal:' in key else 'open account'} "
                    f"has been waiting on WeChat for {self._wait_s:.0f} s; nothing was sent: retry later",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
        self.held.append(key)
        if self._heartbeat is None:
            self._heartbeat = asyncio.ensure_future(self._hold())

    async def _hold(self) -> None:
        """Keep the leases while a slow WeChat call (with its retries) outlasts them."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            for key in list(self.held):
                await self._credentials.extend(key, self._owner, self._lease_s)

    async def release(self) -> None:
        """Give every lease up (their rows go: they hold nothing else)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        held, self.held = self.held, []
        for key in reversed(held):
            await asyncio.shield(self._credentials.drop_lease(key, self._owner))


@dataclass(frozen=True)
class _Seen:
    """One account as a pass found it: where it is bound, its principal, how to call for it."""

    appid: str
    principal: str | None
    current: str | None
    client: BoundClient  # the account's, through the platform routing picks for open/*


@dataclass(frozen=True)
class PassRow:
    """One account of a pass (``gateway open-binding ensure``): the decision (None when the account
    could not be examined), what came of it (``result``: a state, ``newly_bound``, ``created``, or an
    error code) and, for an error, its words."""

    appid: str
    step: Step | None
    result: str
    words: str = ""


@dataclass(frozen=True)
class PassResult:
    """Every account of a pass, in appid order; ``dry_run``: nothing was changed."""

    rows: list[PassRow]
    dry_run: bool


class OpenBindingService(ReadsRegistry):
    """Checks and ensures the binding of authorizers to their open accounts."""

    def __init__(
        self,
        registry: LiveRegistry,
        credentials: CredentialStore,
        records: AuthorizationStore,
        open_accounts: OpenAccountStore,
        tokens: TokenService,
        authorizations: AuthorizationService,
        audit: AuditTrail,
        *,
        claim_lease_s: float = 30.0,
    ) -> None:
        self._live = registry
        self._claim_lease_s = claim_lease_s
        self._credentials = credentials
        self._records = records
        self._open_accounts = open_accounts
        self._tokens = tokens
        self._authorizations = authorizations
        self._audit = audit

    @property
    def group_open_appid(self) -> str:
        """The group's binding open account, from the registry."""
        return self._registry.group.open_appid

    async def planner(self, fresh: Iterable[Account] = ()) -> Planner:
        """A planner over what the store knows of every account (``fresh`` facts win) and of the open
        accounts the gateway created, under the registry in force."""
        accounts = {
            f.authorizer_appid: Account(f.authorizer_appid, f.principal_name or None, f.open_appid)
            for f in await self._records.binding_facts()
        }
        accounts.update((a.appid, a) for a in fresh)
        created = [
            CreatedOpenAccount(c.open_appid, c.principal_name, c.verified)
            for c in await self._open_accounts.all()
        ]
        return Planner(Rules.of(self._registry), accounts.values(), created)

    # --- one account --------------------------------------------------------------------------------

    async def where_bound(self, appid: str) -> str | None:
        """open/get for ``appid``: the open account it is bound to, None when none; nothing recorded."""
        _, client = await self._client(appid)
        return await self._guarded(client.open_get())

    async def check(self, appid: str, *, record: bool = True) -> Step:
        """Where ``appid`` is bound and what §11 says of it, changing nothing at WeChat; recorded for the
        catalog unless ``record`` is false."""
        platform_id, client = await self._client(appid)
        current = await self._guarded(client.open_get())
        principal = await self._principal(appid, platform_id, save=record)
        planner = await self.planner([Account(appid, principal, current)])
        step = planner.step(appid, principal, current)
        if record:
            await self._remember(step, step.state, current)
        return step

    async def ensure(self, appid: str, *, actor: str) -> OpenBinding:
        """Bind ``appid`` to its §11 target when WeChat's API can, else say why (`BindingRefused`) without
        calling."""
        platform_id, client = await self._client(appid)
        current = await self._guarded(client.open_get())
        principal = await self._principal(appid, platform_id, save=True)
        account = Account(appid, principal, current)
        planner = await self.planner([account])
        seen = _Seen(appid, principal, current, client)
        claims = self._claims()
        try:
            step = await self._settled(account, planner.step(appid, principal, current), planner, claims)
            if step.action == "create_then_bind":
                open_appid, _ = await self._create(seen, actor=actor)
                return OpenBinding("newly_bound", open_appid)
            if step.action == "bind" and step.target is not None:
                await self._bind(seen, step.target, actor=actor)
                await self._remember(step, "bound", step.target)
                return OpenBinding("newly_bound", step.target)
        finally:
            await claims.release()
        if step.action == "nothing":
            await self._remember(step, "bound", current)
            return OpenBinding("bound", current)
        await self._remember(step, step.state, current)
        if step.reason == "bound_elsewhere":
            self._audit.record(actor, "binding.elsewhere", authorizer_appid=appid, detail=current)
            return OpenBinding("bound_elsewhere", current)
        raise BindingRefused(step.reason or "binding_conflict", step.words)

    async def create_from(self, appid: str, *, actor: str, force: bool = False) -> tuple[str, Step]:
        """open/create with ``appid``: a new open account (its principal copied), ``appid`` bound to it;
        the new open account and the account's state after it, by §11. Refused (`BindingRefused`
        ``open_account_exists``) when §11 already gives the account's principal an open account, unless
        ``force``: a second open account of one principal splits its unionids. Refused without a known
        principal (``principal_unknown``)."""
        platform_id, client = await self._client(appid)
        current = await self._guarded(client.open_get())
        principal = await self._principal(appid, platform_id, save=True)
        if principal is None:
            raise _principal_unknown(appid)
        if current is not None:  # WeChat would refuse it (89000): said without calling
            code, words = _REFUSALS[89000]
            raise BindingRefused(code, f"{words} ({current}); nothing was created")
        account = Account(appid, principal, current)
        claims = self._claims()
        try:
            await claims.take(principal_claim(principal))  # decided on what the store says under it
            step = (await self.planner([account])).step(appid, principal, current)
            if step.target is not None and not force:
                raise BindingRefused(
                    "open_account_exists",
                    f"the binding rules already give {appid} ({principal}) the open account "
                    f"{step.target} ({step.action}): `gateway open-binding ensure` binds it there; "
                    "a second open account of one principal gives its users other unionids. "
                    "--force creates one all the same",
                )
            return await self._create(_Seen(appid, principal, current, client), actor=actor)
        finally:
            await claims.release()

    async def mark_verified(self, open_appid: str, *, actor: str) -> bool:
        """Record that an open account the gateway created was verified (认证): its cap no longer
        applies. False when the gateway did not create it."""
        changed = await self._open_accounts.mark_verified(open_appid)
        if changed:
            self._audit.record(actor, "binding.open_account_verified", detail=open_appid)
        return changed

    # --- every account ------------------------------------------------------------------------------

    async def run_pass(
        self, *, actor: str, dry_run: bool, record: bool = True, concurrency: int = 8
    ) -> PassResult:
        """§11 for every authorizer with a live authorization: each examined (open/get), one plan made
        over all of them, and, unless ``dry_run``, carried out: open accounts created first, then the
        binds. A dry run sends no call that changes anything; it records each account's state for the
        catalog when ``record`` (``check``), nothing at all otherwise (``ensure --dry-run``)."""
        appids = sorted({a.authorizer_appid for a in await self._records.active()})
        gate = asyncio.Semaphore(concurrency)
        seen: dict[str, _Seen] = {}
        failed: dict[str, PassRow] = {}

        async def examine(appid: str) -> None:
            async with gate:
                try:
                    platform_id, client = await self._client(appid)
                    current = await self._guarded(client.open_get())
                    principal = await self._principal(appid, platform_id, save=record)
                    seen[appid] = _Seen(appid, principal, current, client)
                except Refused as exc:
                    failed[appid] = PassRow(appid, None, exc.code, exc.message)

        await asyncio.gather(*(examine(appid) for appid in appids))
        examined = [seen[appid] for appid in appids if appid in seen]
        planner = await self.planner(Account(s.appid, s.principal, s.current) for s in examined)
        steps = planner.plan([Account(s.appid, s.principal, s.current) for s in examined])
        if dry_run:
            rows = {s.appid: PassRow(s.appid, s, s.state, s.words) for s in steps}
            if record:
                for step in steps:
                    await self._remember(step, step.state, step.current)
        else:
            rows = await self._carry_out(steps, seen, actor, gate, planner)
        rows.update(failed)
        return PassResult([rows[appid] for appid in appids], dry_run)

    async def _carry_out(
        self,
        steps: Sequence[Step],
        seen: dict[str, _Seen],
        actor: str,
        gate: asyncio.Semaphore,
        planner: Planner,
    ) -> dict[str, PassRow]:
        rows: dict[str, PassRow] = {}
        made: dict[str, str] = {}  # creator appid -> the open account its principal's accounts go to

        async def create(step: Step) -> None:
            async with gate:
                claims = self._claims()
                try:
                    settled = await self._settled(self._account(step), step, planner, claims)
                    if settled.action == "create_then_bind":
                        made[step.appid], _ = await self._create(seen[step.appid], actor=actor)
                        rows[step.appid] = PassRow(
                            step.appid, replace(step, target=made[step.appid]), "created"
                        )
                    else:  # its principal got an open account meanwhile (the API, another replica)
                        rows[step.appid] = await self._settle(settled, seen, actor)
                        if settled.action in ("bind", "nothing") and settled.target is not None:
                            made[step.appid] = settled.target
                except Refused as exc:
                    rows[step.appid] = PassRow(step.appid, step, exc.code, exc.message)
                finally:
                    await claims.release()

        async def bind(step: Step) -> None:
            target = step.target if step.creator is None else made.get(step.creator)
            if target is None:
                words = f"the open account {step.creator} was to create was not created"
                rows[step.appid] = PassRow(step.appid, step, "not_created", words)
                return
            async with gate:
                claims = self._claims()
                try:
                    planned = replace(step, target=target)
                    settled = await self._settled(self._account(step), planned, planner, claims)
                    rows[step.appid] = await self._settle(settled, seen, actor)
                except Refused as exc:
                    rows[step.appid] = PassRow(step.appid, step, exc.code, exc.message)
                finally:
                    await claims.release()

        await asyncio.gather(*(create(s) for s in steps if s.action == "create_then_bind"))
        await asyncio.gather(*(bind(s) for s in steps if s.action == "bind"))
        for step in steps:
            if step.action in ("nothing", "console", "conflict"):
                rows[step.appid] = await self._settle(step, seen, actor)
        return rows

    async def _settle(self, step: Step, seen: dict[str, _Seen], actor: str) -> PassRow:
        """One account of a pass carried out by its (settled) step: a bind sent, or its state recorded."""
        if step.action == "bind" and step.target is not None:
            await self._bind(seen[step.appid], step.target, actor=actor)
            await self._remember(step, "bound", step.target)
            return PassRow(step.appid, step, "newly_bound")
        await self._remember(step, step.state, step.current)
        if step.reason == "bound_elsewhere":
            self._audit.record(actor, "binding.elsewhere", authorizer_appid=step.appid, detail=step.current)
        return PassRow(step.appid, step, step.state, step.words)

    # --- claims: one open/create per principal, the cap counted one bind at a time ------------------

    def _claims(self) -> _Claims:
        return _Claims(self._credentials, self._claim_lease_s, wait_s=2 * self._claim_lease_s)

    @staticmethod
    def _account(step: Step) -> Account:
        return Account(step.appid, step.principal, step.current)

    async def _settled(self, account: Account, step: Step, planner: Planner, claims: _Claims) -> Step:
        """``step`` once ``claims`` hold what it needs, decided again on what the store says then: an
        open/create holds its principal's claim, a bind to a capped open account (or to one a create of
        this pass just made, ``step.creator``) that open account's. Whoever held them before has recorded
        its outcome, so the second account of a principal binds to the open account the first made, and
        a bind the cap no longer allows is refused without calling."""
        while True:
            needed: list[str] = []
            if step.action == "create_then_bind" and step.principal:
                needed.append(principal_claim(step.principal))
            elif (
                step.action == "bind"
                and step.target is not None
                and (step.creator is not None or planner.is_capped(step.target))
            ):
                needed.append(open_account_claim(step.target))
            missing = [key for key in needed if key not in claims.held]
            if not missing:
                return step
            for key in missing:
                await claims.take(key)
            planner = await self.planner([account])
            step = planner.step(account.appid, account.principal, account.open_appid)

    # --- the two calls that change state at WeChat ------------------------------------------------

    async def _bind(self, seen: _Seen, open_appid: str, *, actor: str) -> None:
        """open/bind of ``seen`` to ``open_appid`` (the plan allowed it), audited."""
        await self._send_bind(seen.client, open_appid)
        self._audit.record(actor, "binding.bound", authorizer_appid=seen.appid, detail=open_appid)

    async def _create(self, seen: _Seen, *, actor: str) -> tuple[str, Step]:
        """open/create with ``seen``: the new open account remembered with the principal it copied (its
        cap is then counted), audited, and ``seen``'s state after it recorded as §11 gives it; the new
        open account and that step. Never without a known principal."""
        if not seen.principal:
            raise _principal_unknown(seen.appid)
        open_appid = await self._send_create(seen.client)
        await self._open_accounts.remember(open_appid, seen.principal, seen.appid)
        self._audit.record(actor, "binding.created", authorizer_appid=seen.appid, detail=open_appid)
        now = Account(seen.appid, seen.principal, open_appid)
        step = (await self.planner([now])).step(seen.appid, seen.principal, open_appid)
        await self._records.save_binding(seen.appid, step.state, open_appid, step.target)
        return open_appid, step

    # open/bind and open/create change state at WeChat: each is sent once (gateway.wechat.client.SENT_ONCE)
    # and
    # an answer lost on the way (timeout, -1, 5xx) is settled by reading open/get before saying anything
    # (SPEC §4 open-binding, §7; protocol §10, last row). An account open/get finds bound nowhere, twice
    # READ_BACK_AGAIN_S apart, is reported not bound yet with the outcome unknown (WeChat may still be
    # processing the call), rather than resent at once (a bind still in flight would meet it with 89000).

    async def _send_bind(self, client: BoundClient, open_appid: str) -> None:
        """The one place open/bind is sent: once; after a lost answer, open/get says whether it landed
        (``already_bound`` when the account turns out bound to another open account meanwhile;
        `WeChatUnavailable` when it was not applied, or stays unknown)."""
        try:
            await self._guarded(client.open_bind(open_appid))
        except OutcomeUnknown as lost:
            bound_to = await self._read_back(client, lost)
            if bound_to != open_appid:
                code, words = _REFUSALS[89000]
                raise BindingRefused(
                    code, f"{words} ({bound_to}); it was not bound to {open_appid}"
                ) from None

    async def _send_create(self, client: BoundClient) -> str:
        """The one place open/create is sent: once; after a lost answer, the open account open/get finds
        the account bound to (it was bound to none before, which is checked first: WeChat refuses a bound
        account with 89000, so a binding found afterwards is the created one)."""
        before = await self._guarded(client.open_get())
        if before is not None:
            code, words = _REFUSALS[89000]
            raise BindingRefused(code, f"{words} ({before}); nothing was created")
        try:
            return await self._guarded(client.open_create())
        except OutcomeUnknown as lost:
            return await self._read_back(client, lost)

    async def _read_back(self, client: BoundClient, lost: OutcomeUnknown) -> str:
        """The open account open/get finds the account bound to after ``lost``, read once more
        `READ_BACK_AGAIN_S` later if it shows none yet; `WeChatUnavailable` saying the outcome is unknown
        when it still shows none, or a read fails too."""
        try:
            bound_to = await client.open_get()
            if bound_to is None:
                await asyncio.sleep(READ_BACK_AGAIN_S)
                bound_to = await client.open_get()
        except (UpstreamError, UpstreamUnavailable) as exc:
            raise WeChatUnavailable(
                f"WeChat {lost.api}: outcome unknown: its answer was lost and open/get failed too ({exc})",
            ) from None
        if bound_to is None:
            raise WeChatUnavailable(
                f"WeChat {lost.api} got no answer ({lost.problem}); {NOT_BOUND_YET}",
            )
        return bound_to

    # --- what the service reads ---------------------------------------------------------------------

    async def _remember(
        self, step: Step, state: str, open_appid: str | None, *, target: str | None = None
    ) -> None:
        """Keep the account's state and target for the catalog."""
        await self._records.save_binding(step.appid, state, open_appid, target or step.target)

    async def _principal(self, appid: str, platform_id: str, *, save: bool) -> str | None:
        """The account's principal (主体): from its stored profile, else asked of WeChat (kept when
        ``save``; a dry run keeps nothing). None when WeChat cannot say now."""
        profile = await self._records.profile(appid)
        if profile is None and save:
            profile = await self._authorizations.refresh_profile(platform_id, appid)
        elif profile is None:
            platform = self._registry.platform(platform_id)
            if platform is None:
                return None
            try:
                component = await self._tokens.component_client(platform_id)
                info = await component.authorizer_info(platform.component_appid, appid)
            except (UpstreamError, UpstreamUnavailable):
                return None
            profile = profile_of(appid, info)
        return profile.principal_name or None if profile is not None else None

    async def _client(self, appid: str) -> tuple[str, BoundClient]:
        """The platform routing picks for open/* for ``appid``, and the account's client there."""
        try:
            platform_id = await self._authorizations.route(appid, OPEN_API)
        except PermissionSetMissing:
            raise PermissionSetMissing(
                appid,
                f"no platform holds permission set 24 (official account) or 25 (mini program), "
                f"open-platform account management, for {appid}",
            ) from None
        return platform_id, await self._tokens.authorizer_client(platform_id, appid)

    @staticmethod
    async def _guarded(pending: Awaitable[T]) -> T:
        """WeChat's answer, or its refusal in words (`BindingRefused`; `WeChatUnavailable` when WeChat is
        unreachable; a call that changes state and got no answer raises OutcomeUnknown, for the caller to
        read the outcome back)."""
        try:
            return await pending
        except UpstreamError as exc:
            code, words = _REFUSALS.get(exc.errcode, ("wechat_refused", exc.errmsg))
            raise BindingRefused(code, f"WeChat refused ({exc.errcode}): {words}") from None
        except OutcomeUnknown:
            raise  # the caller reads the outcome back
        except UpstreamUnavailable as exc:
            raise WeChatUnavailable(str(exc)) from None
