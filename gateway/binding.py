"""The binding open account (protocol §6): every authorizer bound to the group's ONE ``open_appid``.

Checking and binding go through the component holding open-account management (24 for an official
account, 25 for a mini program) for that authorizer, with its authorizer token. An account bound to
another open account is reported (``bound_elsewhere``, an audit finding), never unbound.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, TypeVar

import msgspec

from gateway.audit import AuditTrail
from gateway.authorizations import AuthorizationService
from gateway.errors import ApiError, OutcomeUnknown, UpstreamError, UpstreamUnavailable
from gateway.live_registry import LiveRegistry, ReadsRegistry
from gateway.store import Store
from gateway.tokens import TokenService
from gateway.wechat import WeChatClient

__all__ = ["BindingState", "OpenBinding", "OpenBindingService"]

BindingState = Literal["bound", "newly_bound", "bound_elsewhere", "unbound"]
T = TypeVar("T")
OPEN_API = "cgi-bin/open/get"  # any open/* path: they need the same sets (24 / 25)

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


class OpenBindingService(ReadsRegistry):
    """Checks and ensures the binding of authorizers to the group's open account."""

    def __init__(
        self,
        registry: LiveRegistry,
        store: Store,
        tokens: TokenService,
        wechat: WeChatClient,
        authorizations: AuthorizationService,
        audit: AuditTrail,
    ) -> None:
        self._live = registry
        self._store = store
        self._tokens = tokens
        self._wechat = wechat
        self._authorizations = authorizations
        self._audit = audit

    @property
    def group_open_appid(self) -> str:
        """The group's binding open account, from the registry."""
        return self._registry.group.open_appid

    async def check(self, appid: str, *, record: bool = True) -> OpenBinding:
        """Where ``appid`` is bound, changing nothing at WeChat (``unbound`` when nowhere); recorded for
        the catalog unless ``record`` is false (a catalog sync records it with the profile)."""
        token, component_appid = await self._token(appid)
        bound_to = await self._guarded(self._wechat.open_get(token, component_appid=component_appid))
        result = self._state(bound_to, newly=False)
        return await self._remember(appid, result) if record else result

    async def ensure(self, appid: str, *, actor: str, dry_run: bool = False) -> OpenBinding:
        """Bind ``appid`` to the group's open account when it is bound nowhere.

        With ``dry_run`` the answer says what would happen (``unbound`` stays ``unbound``).
        """
        token, component_appid = await self._token(appid)
        bound_to = await self._guarded(self._wechat.open_get(token, component_appid=component_appid))
        if bound_to is not None or dry_run:
            result = self._state(bound_to, newly=False)
            if result.state == "bound_elsewhere":
                self._audit.record(actor, "binding.elsewhere", authorizer_appid=appid, detail=bound_to)
            return await self._remember(appid, result)
        bound = await self._bind_and_confirm(token, self.group_open_appid, component_appid)
        if bound.state == "bound_elsewhere":  # bound meanwhile by someone else: reported, not changed
            self._audit.record(actor, "binding.elsewhere", authorizer_appid=appid, detail=bound.open_appid)
            return await self._remember(appid, bound)
        self._audit.record(actor, "binding.bound", authorizer_appid=appid, detail=self.group_open_appid)
        return await self._remember(appid, OpenBinding("newly_bound", self.group_open_appid))

    async def _remember(self, appid: str, result: OpenBinding) -> OpenBinding:
        """Keep the state for the catalog (where "newly bound" is simply "bound")."""
        state = "bound" if result.state == "newly_bound" else result.state
        await self._store.authorizations.save_binding(appid, state, result.open_appid)
        return result

    async def create_from(self, appid: str, *, actor: str) -> str:
        """open/create with ``appid``: a new open account (its principal copied), ``appid`` bound to it."""
        token, component_appid = await self._token(appid)
        open_appid = await self._create_and_confirm(token, component_appid)
        self._audit.record(actor, "binding.created", authorizer_appid=appid, detail=open_appid)
        return open_appid

    # open/bind and open/create change state at WeChat: each is sent once (gateway.wechat.SENT_ONCE) and
    # an answer lost on the way (timeout, -1, 5xx) is settled by reading open/get before saying anything
    # (SPEC §4 open-binding, §7; protocol §10, last row). An account open/get finds bound nowhere was not
    # bound: the answer says so and that a retry is safe, rather than resending at once (a bind still in
    # flight at WeChat would meet it with 89000).

    async def _bind_and_confirm(
        self, token: str, open_appid: str, component_appid: str | None
    ) -> OpenBinding:
        """open/bind, sent once; after a lost answer, the state open/get reads (``newly_bound`` when
        bound to ``open_appid``, else ``bound_elsewhere``); 503 when it was not applied or stays unknown."""
        try:
            await self._guarded(self._wechat.open_bind(token, open_appid, component_appid=component_appid))
        except OutcomeUnknown as lost:
            bound_to = await self._read_back(token, component_appid, lost.api)
            if bound_to is None:
                raise ApiError(
                    503,
                    "wechat_unavailable",
                    f"WeChat {lost.api} got no answer ({lost.problem}); open/get shows the account bound to "
                    "no open account, so the bind was not applied and can be retried",
                ) from None
            return OpenBinding("newly_bound" if bound_to == open_appid else "bound_elsewhere", bound_to)
        return OpenBinding("newly_bound", open_appid)

    async def _create_and_confirm(self, token: str, component_appid: str | None) -> str:
        """open/create, sent once: the new open account; after a lost answer, the one open/get finds the
        account bound to (it was bound to none before, which is checked first: WeChat refuses a bound
        account with 89000, so a binding found afterwards is the created one)."""
        before = await self._guarded(self._wechat.open_get(token, component_appid=component_appid))
        if before is not None:
            code, words = _REFUSALS[89000]
            raise ApiError(409, code, f"{words} ({before}); nothing was created")
        try:
            return await self._guarded(self._wechat.open_create(token, component_appid=component_appid))
        except OutcomeUnknown as lost:
            bound_to = await self._read_back(token, component_appid, lost.api)
            if bound_to is None:
                raise ApiError(
                    503,
                    "wechat_unavailable",
                    f"WeChat {lost.api} got no answer ({lost.problem}); open/get shows the account bound to "
                    "no open account, so no open account was created and it can be retried",
                ) from None
            return bound_to

    async def _read_back(self, token: str, component_appid: str | None, api: str) -> str | None:
        """open/get after ``api``'s answer was lost; 503 saying the outcome is unknown if it fails too."""
        try:
            return await self._wechat.open_get(token, component_appid=component_appid)
        except (UpstreamError, UpstreamUnavailable) as exc:
            raise ApiError(
                503,
                "wechat_unavailable",
                f"WeChat {api}: outcome unknown: its answer was lost and open/get failed too ({exc})",
            ) from None

    def _state(self, bound_to: str | None, *, newly: bool) -> OpenBinding:
        if bound_to is None:
            return OpenBinding("unbound", None)
        if bound_to == self.group_open_appid:
            return OpenBinding("newly_bound" if newly else "bound", bound_to)
        return OpenBinding("bound_elsewhere", bound_to)

    async def _token(self, appid: str) -> tuple[str, str | None]:
        """The authorizer token of ``appid`` from the platform routing picks for open/*, with that
        platform's component_appid (the upstream breaker's key; None if a reload just removed it)."""
        try:
            platform_id = await self._authorizations.route(appid, OPEN_API)
        except ApiError as exc:
            if exc.code == "permission_set_missing":
                raise ApiError(
                    409,
                    "permission_set_missing",
                    f"no platform holds permission set 24 (official account) or 25 (mini program), "
                    f"open-platform account management, for {appid}",
                ) from None
            raise
        token = await self._tokens.authorizer_token(platform_id, appid)
        platform = self._registry.platform(platform_id)
        return token.value, None if platform is None else platform.component_appid

    @staticmethod
    async def _guarded(pending: Awaitable[T]) -> T:
        """WeChat's answer, or its refusal as a 409 in words (503 when WeChat is unreachable; a call that
        changes state and got no answer raises OutcomeUnknown, for the caller to read the outcome back)."""
        try:
            return await pending
        except UpstreamError as exc:
            code, words = _REFUSALS.get(exc.errcode, ("wechat_refused", exc.errmsg))
            raise ApiError(409, code, f"WeChat refused ({exc.errcode}): {words}") from None
        except OutcomeUnknown:
            raise  # the caller reads the outcome back
        except UpstreamUnavailable as exc:
            raise ApiError(503, "wechat_unavailable", str(exc)) from None
