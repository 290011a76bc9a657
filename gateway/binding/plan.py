"""Whose open account each authorizer goes to, and what it takes to get there (SPEC §11). Pure: no I/O.

WeChat's rules, as its documentation states them:

- ``open/bind`` binds only an account of the SAME principal (主体) as the open account, else 89001
  (D/Third-party_Platforms/2.0/api/account/bind.html: "二者须主体相同"; 89001 "not same contractor").
  Related principals (a group's subsidiaries) bind only in the Open Platform console
  (D/developers/product/open/bind.md §1.1: the console takes "同主体或者关联主体";
  the API "仅支持绑定同主体").
- An open account made with ``open/create`` is unverified and holds at most 5 accounts through the API
  (bind.html note 1 "最多只能绑定5个"; create.html note 1), else 89004. One registered in the console
  takes API bindings only once verified (89036). The gateway counts the first before calling: it knows
  the open accounts it created (it stores them) and how many accounts it saw bound to each.

The decision for one account, from its principal, where it is bound now, the registry's mode and what
the gateway knows of the open accounts, is one of the `Action`s; the catalog's state (SPEC §6) follows.
``Planner`` holds what is known of every account, so that a whole pass (``gateway open-binding ensure``)
and a single account (``POST /v1/authorizers/{appid}/open-binding``, a catalog sync) decide alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.registry.model import BindingMode, Registry, principal_key

__all__ = [
    "UNVERIFIED_API_LIMIT",
    "Account",
    "Action",
    "CatalogBinding",
    "CreatedOpenAccount",
    "Planner",
    "Rules",
    "Step",
]

# Accounts an unverified open account made by open/create takes through the API (bind.html note 1).
UNVERIFIED_API_LIMIT = 5

log = logging.getLogger(__name__)
# Group open accounts whose mixed principals were already logged: once per process, not once per plan.
_WARNED_MIXED: set[str] = set()

Action = Literal["nothing", "bind", "create_then_bind", "console", "conflict"]
CatalogBinding = Literal["bound", "bound_elsewhere", "unbound", "console_binding_needed", "unknown"]


@dataclass(frozen=True)
class Rules:
    """The registry's binding section, read once: the mode, the group's open account and principal, and
    the open account of each listed principal (by `principal_key`)."""

    mode: BindingMode
    group_open_appid: str
    group_principal: str | None
    listed: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, registry: Registry) -> Rules:
        """The rules of ``registry``; without ``group.binding``: mode group, nothing listed."""
        group = registry.group
        binding = group.binding
        return cls(
            mode="group" if binding is None else binding.mode,
            group_open_appid=group.open_appid,
            group_principal=group.principal_name,
            listed={principal_key(a.principal_name): a.open_appid for a in binding.open_accounts}
            if binding is not None
            else {},
        )


@dataclass(frozen=True)
class Account:
    """What is known of one authorizer: its principal (None before WeChat told it) and the open account
    it is bound to (None: bound nowhere)."""

    appid: str
    principal: str | None
    open_appid: str | None


@dataclass(frozen=True)
class CreatedOpenAccount:
    """An open account the gateway made with open/create, with the principal it copied."""

    open_appid: str
    principal: str
    verified: bool = False


@dataclass(frozen=True)
class Step:
    """The decision for one account.

    ``target`` is the open account it should end up on (None: one ``create_then_bind`` of ``creator``
    makes it); ``state`` is the catalog's word for where it stands now; ``reason`` a code for a
    ``conflict`` or ``console`` (``bound_elsewhere``, ``principal_mismatch``, ``open_account_full``,
    ``open_account_shared``, ``principal_unknown``) and ``words`` say it for people.
    """

    appid: str
    principal: str | None
    current: str | None
    target: str | None
    action: Action
    state: CatalogBinding
    reason: str | None = None
    words: str = ""
    creator: str | None = None


class Planner:
    """Decisions for accounts, given everything known of the others.

    ``accounts`` are every account the gateway knows (their principals and bindings decide the group's
    principal when the registry does not give it, and in ``per_principal`` mode the open account a
    principal already uses); ``created`` the open accounts the gateway made. `step` decides one account;
    `plan` decides several in order, counting the room each planned bind takes (and, in
    ``per_principal`` mode, letting the first account of a principal create the open account the others
    of that principal are bound to).
    """

    def __init__(
        self,
        rules: Rules,
        accounts: Iterable[Account],
        created: Iterable[CreatedOpenAccount] = (),
        *,
        limit: int = UNVERIFIED_API_LIMIT,
    ) -> None:
        self._rules = rules
        self._limit = limit
        self._accounts = {a.appid: a for a in accounts}
        self._created = {c.open_appid: c for c in created}
        self._members: Counter[str] = Counter(
            a.open_appid for a in self._accounts.values() if a.open_appid is not None
        )
        self._outgrown = {o for o in self._created if self._members[o] > limit}
        self.group_principal = self._group_principal()
        # principal (key) -> its open account; and each known open account's principal (key).
        self._targets: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        if self.group_principal is not None:
            self._claim(principal_key(self.group_principal), rules.group_open_appid)
        for principal, open_appid in rules.listed.items():
            self._claim(principal, open_appid)
        for account in self._created.values():
            self._owner.setdefault(account.open_appid, principal_key(account.principal))
        # per_principal: open accounts holding several principals' accounts that nobody owns, and the
        # principals whose only candidates they are (see `_adopt_open_accounts_in_use`).
        self._shared: set[str] = set()
        self._stuck: dict[str, str] = {}
        if rules.mode == "per_principal":
            self._adopt_open_accounts_in_use()
        # per_principal: principals whose open account a planned create_then_bind makes, by its creator.
        self._pending: dict[str, str] = {}

    # --- what is known ------------------------------------------------------------------------------

    def _group_principal(self) -> str | None:
        """The registry's; else the one the gateway copied when it created the group's open account;
        else the one principal of every account bound to it (SPEC §11: they share its principal). Bound
        accounts of several principals (related principals bound in the console) tell nothing: None,
        and WeChat judges each bind, as before ``group.binding`` existed."""
        if self._rules.group_principal is not None:
            return self._rules.group_principal
        group_open = self._rules.group_open_appid
        created = self._created.get(group_open)
        if created is not None and created.principal.strip():
            return created.principal
        bound: dict[str, str] = {}
        for account in sorted(self._accounts.values(), key=lambda a: a.appid):
            if account.open_appid == group_open and account.principal:
                bound.setdefault(principal_key(account.principal), account.principal)
        if len(bound) == 1:
            return next(iter(bound.values()))
        if bound and group_open not in _WARNED_MIXED:
            _WARNED_MIXED.add(group_open)
            log.warning(
                "the accounts bound to %s (group.open_appid) have %d principals: its own cannot be told; "
                "set group.principal_name in the registry (SPEC §11)",
                group_open,
                len(bound),
            )
        return None

    def _claim(self, principal: str, open_appid: str) -> None:
        self._targets.setdefault(principal, open_appid)
        self._owner.setdefault(open_appid, principal)

    def _adopt_open_accounts_in_use(self) -> None:
        """per_principal: a principal without a listed open account takes the one most of its accounts
        are bound to, unless that open account is another principal's. One nobody owns whose accounts
        span several principals (only the console binds across principals) is nobody's: which principal
        it belongs to cannot be told, so none adopts it, and a principal left with no other candidate is
        ``open_account_shared`` until the registry lists its open account."""
        in_use: dict[str, Counter[str]] = {}
        principals: dict[str, set[str]] = {}
        for account in sorted(self._accounts.values(), key=lambda a: a.appid):
            if account.principal and account.open_appid:
                key = principal_key(account.principal)
                in_use.setdefault(key, Counter())[account.open_appid] += 1
                principals.setdefault(account.open_appid, set()).add(key)
        self._shared = {o for o, keys in principals.items() if len(keys) > 1 and o not in self._owner}
        for principal, counts in sorted(in_use.items()):
            if principal in self._targets:
                continue
            for open_appid, _ in counts.most_common():
                if open_appid in self._shared:
                    continue
                if self._owner.get(open_appid, principal) == principal:
                    self._claim(principal, open_appid)
                    break
            else:
                shared = sorted(o for o in counts if o in self._shared)
                if shared:
                    self._stuck[principal] = shared[0]

    def target_of(self, principal: str | None) -> str | None:
        """The open account a principal's accounts go to, where one is known."""
        if principal is None:
            return None
        return self._targets.get(principal_key(principal))

    def members(self, open_appid: str) -> int:
        """How many accounts the gateway knows bound to ``open_appid`` (and binds it plans)."""
        return self._members[open_appid]

    def is_capped(self, open_appid: str) -> bool:
        """Whether the API's 5-account cap applies: an unverified open account the gateway created (one
        seen holding more than the cap has evidently been verified since)."""
        created = self._created.get(open_appid)
        return created is not None and not created.verified and open_appid not in self._outgrown

    # --- decisions ----------------------------------------------------------------------------------

    def step(self, appid: str, principal: str | None, current: str | None) -> Step:
        """The decision for one account, its principal and current open account as just read; nothing
        is counted (see `plan`)."""
        return self._decide(Account(appid, principal, current), commit=False)

    def plan(self, accounts: Sequence[Account]) -> list[Step]:
        """Decisions for ``accounts`` in order, each planned bind (or create) taking its room."""
        return [self._decide(account, commit=True) for account in accounts]

    def _decide(self, account: Account, *, commit: bool) -> Step:
        appid, principal, current = account.appid, account.principal, account.open_appid
        rules = self._rules
        if principal is None or not principal.strip():
            return self._without_principal(account)
        key = principal_key(principal)
        target = self._targets.get(key)
        if rules.mode == "group":
            if target is None and self.group_principal is None:
                # Nothing tells the group's principal (no principal_name, nothing bound yet): WeChat
                # judges, as before group.binding existed.
                target = rules.group_open_appid
            elif target is None:
                # Another principal, unlisted: only the console binds it, to the group's open account.
                return self._console(account, rules.group_open_appid)
        elif target is None and (key in self._stuck or current in self._shared):
            return self._shared_conflict(account, self._stuck.get(key) or current or "")
        elif target is None and current is not None and self._owner.get(current, key) == key:
            target = current  # per_principal: the open account it is already on is its principal's
        if current is not None:
            return _already_bound(account, current, target)
        if target is None:  # per_principal, no open account for this principal yet
            creator = self._pending.get(key)
            if creator is None:
                if commit:
                    self._pending[key] = appid
                    self._members[f"new:{key}"] += 1
                return Step(
                    appid,
                    principal,
                    None,
                    None,
                    "create_then_bind",
                    "unbound",
                    words="open/create makes its principal's open account and binds it",
                    creator=appid,
                )
            return self._bind(account, None, f"new:{key}", commit, creator=creator)
        return self._bind(account, target, target, commit)

    def _bind(
        self, account: Account, target: str | None, room: str, commit: bool, *, creator: str | None = None
    ) -> Step:
        """A bind to ``target`` (or to the open account ``creator`` makes, counted as ``room``), unless
        it is an unverified API-created one already holding its limit."""
        capped = creator is not None or (target is not None and self.is_capped(target))
        if capped and self._members[room] >= self._limit:
            named = target or f"the open account {creator} creates"
            return Step(
                account.appid,
                account.principal,
                None,
                target,
                "conflict",
                "unbound",
                "open_account_full",
                f"{named} is unverified and made through the API: it holds at most {self._limit} "
                "accounts until it is verified (认证) on the Open Platform",
                creator=creator,
            )
        if commit:
            self._members[room] += 1
        return Step(account.appid, account.principal, None, target, "bind", "unbound", creator=creator)

    def _shared_conflict(self, account: Account, shared: str) -> Step:
        """per_principal: the account's principal has no open account but one holding several
        principals' accounts: neither binding it there nor creating a second open account is safe."""
        return Step(
            account.appid,
            account.principal,
            account.open_appid,
            None,
            "conflict",
            "unknown" if account.open_appid is not None else "unbound",
            "open_account_shared",
            f"{shared} holds accounts of more than one principal (bound in the Open Platform console), so "
            f"whose it is cannot be told: list the open account of {account.principal} in "
            "group.binding.open_accounts",
        )

    def _console(self, account: Account, target: str) -> Step:
        appid, principal, current = account.appid, account.principal, account.open_appid
        if current is not None:
            return _already_bound(account, current, target)
        return Step(
            appid,
            principal,
            None,
            target,
            "console",
            "console_binding_needed",
            "principal_mismatch",
            f"its principal ({principal}) is not the open account's: WeChat's API binds only the same "
            f"principal; bind it to {target} in the Open Platform console (related principals)",
        )

    def _without_principal(self, account: Account) -> Step:
        """No principal known yet: only an account already on the group's open account is settled."""
        appid, current = account.appid, account.open_appid
        group_open = self._rules.group_open_appid
        if current is not None and current == group_open and self._rules.mode == "group":
            return Step(appid, None, current, group_open, "nothing", "bound")
        return Step(
            appid,
            None,
            current,
            None,
            "conflict",
            "unknown",
            "principal_unknown",
            "its principal is not known yet (api_get_authorizer_info): run `gateway catalog sync`",
        )


def _already_bound(account: Account, current: str, target: str | None) -> Step:
    """An account already bound: nothing to do on its target, else an audit finding the gateway never
    changes (``target`` None: its principal has no open account yet)."""
    appid, principal = account.appid, account.principal
    if current == target:
        return Step(appid, principal, current, target, "nothing", "bound")
    expected = target or "a new open account of its principal"
    return Step(
        appid,
        principal,
        current,
        target,
        "conflict",
        "bound_elsewhere",
        "bound_elsewhere",
        f"bound to {current}, not {expected}: an audit finding, never changed by the gateway",
    )
