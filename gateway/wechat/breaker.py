"""Circuit breakers on the gateway's calls to WeChat: one per (platform, API family), in this process.

    closed ──threshold faults in a row──► open ──cool-down passed, next call──► half-open
      ▲                                    ▲                                       │
      │                                    └─────────── the trial call fails ──────┤
      └──────────────────────────────────────────────── the trial call succeeds ───┘

A *fault* is WeChat not answering usefully: a timeout, a connection refused or dropped, HTTP 5xx,
errcode ``-1``, an answer that is not the JSON expected. Any other answer — success, or a refusal such as
40001, 45009 or 61023 — proves WeChat reachable and counts as a success (those refusals are handled where
they mean something: ``gateway.credentials.tokens``). Each attempt counts, retries included, so a breaker
opens
after at most ``threshold`` calls reached a failing WeChat.

While open, a call fails at once with `CircuitOpen` (an ``UpstreamUnavailable``: callers get what they get
when WeChat is unreachable — 503 ``wechat_unavailable`` on ``/v1``, ``-1`` on ``/wx``) without reaching
WeChat. Once the cool-down has passed, the next call is the trial and the others still fail fast until
it ends: its success closes the breaker, its fault opens it for another cool-down.

Keys (`BreakerKey`): ``platform`` is the registry id of the component the call is made for, or ``*``
when the caller did not say (an authorizer token alone does not tell). ``family`` groups the APIs that
fail together:

    component_token    api_component_token
    authorizer_token   api_authorizer_token
    authorizer_info    api_get_authorizer_info, api_get_authorizer_list, api_*_authorizer_option
    authorization      api_create_preauthcode, api_query_auth
    jsapi_ticket       ticket/getticket
    open_account       open/get, have, bind, create, unbind, sameentity
    clear_quota        clear_quota, clear_quota/v2
    proxy:<prefix>     calls forwarded on /wx, by the first two segments of their entry in the routing
                       table (proxy:cgi-bin/user, proxy:wxa/getwxacode, proxy:card …); proxy:other for
                       paths the table does not know
    other              anything else the gateway calls itself (message/custom/send …)

State is per process, in memory: replicas each keep their own breakers (each opens after ``threshold``
faults of its own), and a restart starts closed. Nothing here does I/O; the clock is a parameter.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from gateway.errors import CircuitOpen
from gateway.wechat.routing import table_entry

__all__ = [
    "ANY_PLATFORM",
    "Admission",
    "BreakerKey",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "UpstreamBreakers",
    "family_of",
    "proxy_family",
]

log = logging.getLogger(__name__)

ANY_PLATFORM = "*"

# Path prefixes (no leading "/") of the gateway's own calls, and the family each belongs to.
_FAMILIES = (
    ("cgi-bin/component/api_component_token", "component_token"),
    ("cgi-bin/component/api_authorizer_token", "authorizer_token"),
    ("cgi-bin/component/api_get_authorizer_", "authorizer_info"),
    ("cgi-bin/component/api_set_authorizer_", "authorizer_info"),
    ("cgi-bin/component/api_create_preauthcode", "authorization"),
    ("cgi-bin/component/api_query_auth", "authorization"),
    ("cgi-bin/ticket/", "jsapi_ticket"),
    ("cgi-bin/open/", "open_account"),
    ("cgi-bin/component/clear_quota", "clear_quota"),
    ("cgi-bin/clear_quota", "clear_quota"),
)


def family_of(path: str) -> str:
    """The family of one of the gateway's own calls, by its path (``cgi-bin/component/api_…``)."""
    path = path.lstrip("/")
    return next((family for prefix, family in _FAMILIES if path.startswith(prefix)), "other")


def proxy_family(path: str) -> str:
    """The family of a call forwarded on ``/wx``: a bounded set, whatever path a client sends."""
    entry = table_entry(path)
    if entry is None:
        return "proxy:other"
    return "proxy:" + "/".join(entry.rstrip("/").split("/")[:2])


class BreakerState(enum.IntEnum):
    """The states, valued as the ``gateway_upstream_breaker_state`` gauge shows them."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class BreakerPolicy:
    """``threshold`` faults in a row open a breaker for ``cooldown_s`` seconds."""

    threshold: int = 5
    cooldown_s: float = 10.0


@dataclass(frozen=True)
class BreakerKey:
    """What one breaker guards: a platform's (or ``*``'s) calls of one API family."""

    platform: str
    family: str

    def __str__(self) -> str:
        return f"{self.platform}/{self.family}"


class CircuitBreaker:
    """One breaker's state machine (see the module docstring). Not thread-safe; asyncio needs no lock, as
    no method awaits."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.faults = 0  # in a row, since the last success
        self._opened_at = 0.0
        self._trial = False  # the half-open trial call is in flight

    def retry_in(self) -> float:
        """Seconds until an open breaker lets its trial call through (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._policy.cooldown_s - self._clock())

    def admit(self) -> bool | None:
        """None: the call must not go to WeChat now. Otherwise it may, and the value says whether it is
        the half-open trial; it must then end in exactly one of `succeeded`, `failed` or `abandoned`,
        passed that value."""
        if self.state is BreakerState.OPEN:
            if self.retry_in() > 0:
                return None
            self.state = BreakerState.HALF_OPEN
            self._trial = False
        if self.state is BreakerState.HALF_OPEN:
            if self._trial:
                return None
            self._trial = True
            return True
        return False

    def succeeded(self, trial: bool) -> None:
        """WeChat answered: the trial closes a half-open breaker; any answer resets the fault count of a
        closed one. Other calls' answers while open or half-open (admitted before it opened, answering
        late) change nothing: the trial decides."""
        if self.state is BreakerState.CLOSED or (trial and self.state is BreakerState.HALF_OPEN):
            self.state = BreakerState.CLOSED
            self.faults = 0
            self._trial = False

    def failed(self, trial: bool) -> None:
        """WeChat did not answer usefully: a closed breaker opens at the threshold, a half-open one when
        its trial fails."""
        if self.state is BreakerState.OPEN or (self.state is BreakerState.HALF_OPEN and not trial):
            return
        self.faults += 1
        if self.state is BreakerState.HALF_OPEN or self.faults >= self._policy.threshold:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._trial = False

    def abandoned(self, trial: bool) -> None:
        """An admitted call ended without telling (cancelled): it decides nothing, and if it was the
        trial the next call may be."""
        if trial and self.state is BreakerState.HALF_OPEN:
            self._trial = False


@dataclass(frozen=True)
class Admission:
    """A call let through by `UpstreamBreakers.admit`; hand it back with the call's outcome."""

    key: BreakerKey
    trial: bool


OnChange = Callable[[BreakerKey, BreakerState], None]


class UpstreamBreakers:
    """Every breaker of the process, made on first use. ``on_change`` is told of each transition (the
    app sets its metrics from it); transitions are logged, with the key only (never a token)."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[BreakerKey, CircuitBreaker] = {}

    def admit(self, key: BreakerKey, api: str) -> Admission:
        """Let a call through, or raise `CircuitOpen` (naming ``api``) without it reaching WeChat."""
        breaker = self._breaker(key)
        before = breaker.state
        trial = breaker.admit()
        self._changed(key, before, breaker)
        if trial is None:
            wait = breaker.retry_in()
            when = f"next try in {wait:.1f} s" if wait > 0 else "a trial call is under way"
            raise CircuitOpen(
                api, f"calls of {key} paused after {breaker.faults} faults in a row; {when}", retry_in_s=wait
            )
        return Admission(key, trial)

    def succeeded(self, admission: Admission) -> None:
        """The call got an answer from WeChat."""
        self._report(admission, CircuitBreaker.succeeded)

    def failed(self, admission: Admission) -> None:
        """The call met a fault."""
        self._report(admission, CircuitBreaker.failed)

    def abandoned(self, admission: Admission) -> None:
        """The call was cancelled before it could tell."""
        self._report(admission, CircuitBreaker.abandoned)

    def state(self, key: BreakerKey) -> BreakerState:
        """The state of ``key`` as last moved (an open breaker whose cool-down passed stays OPEN until a
        call comes)."""
        breaker = self._breakers.get(key)
        return BreakerState.CLOSED if breaker is None else breaker.state

    def states(self) -> dict[BreakerKey, BreakerState]:
        """Every breaker made so far, and its state."""
        return {key: breaker.state for key, breaker in self._breakers.items()}

    def forget(self, platforms: Collection[str] | None = None) -> None:
        """Drop the breakers of ``platforms`` (every breaker when None), as if no call had been made: a
        reload pointed WeChat's API at another host, or removed those platforms. Those not closed are
        reported closed."""
        for key in [k for k in self._breakers if platforms is None or k.platform in platforms]:
            breaker = self._breakers.pop(key)
            if breaker.state is not BreakerState.CLOSED:
                log.info("upstream breaker %s reset by a registry reload", key)
                if self._on_change is not None:
                    self._on_change(key, BreakerState.CLOSED)

    def _breaker(self, key: BreakerKey) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.policy, self._clock)
        return breaker

    def _report(self, admission: Admission, outcome: Callable[[CircuitBreaker, bool], None]) -> None:
        breaker = self._breaker(admission.key)
        before = breaker.state
        outcome(breaker, admission.trial)
        self._changed(admission.key, before, breaker)

    def _changed(self, key: BreakerKey, before: BreakerState, breaker: CircuitBreaker) -> None:
        after = breaker.state
        if after is before:
            return
        match after:
            case BreakerState.OPEN:
                log.warning(
                    "upstream breaker %s opened after %d faults in a row; calls fail fast for %.0f s",
                    key,
                    breaker.faults,
                    self.policy.cooldown_s,
                )
            case BreakerState.HALF_OPEN:
                log.info("upstream breaker %s half-open: one trial call goes to WeChat", key)
            case BreakerState.CLOSED:
                log.info("upstream breaker %s closed: WeChat answers again", key)
        if self._on_change is not None:
            self._on_change(key, after)
