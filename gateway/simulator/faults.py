"""Injected faults and call counters: the knobs tests turn to see how a caller copes with WeChat.

A fault names an endpoint (``api_authorizer_token``, ``open/bind``, ``user/get``, or ``*`` for all) and,
optionally, the account it hits (``key``: a component or authorizer appid involved in the call). It can
delay the answer, replace it with an errcode, an HTTP status or a body that is not JSON, for ``times``
calls or until cleared. The first fault added that matches a call applies. With ``applied`` the world
acts on the call first and only its answer is delayed or replaced: the call succeeds at WeChat but the
caller never learns it (the case a caller must not resend blindly, protocol §10).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

__all__ = ["QUOTA_ERRCODE", "CounterView", "Counters", "Fault", "FaultBook", "FaultSpec", "FaultView"]

QUOTA_ERRCODE = 45009  # a 45009 fault models an exhausted quota: clear_quota lifts it for that account


class FaultSpec(msgspec.Struct, forbid_unknown_fields=True):
    """What to break (the body of ``POST /sim/faults``)."""

    endpoint: str
    errcode: int | None = None
    http_status: int | None = None
    delay_s: float = 0.0
    malformed: bool = False
    times: int | None = None  # None: until cleared
    key: str | None = None
    applied: bool = False  # act on the call, then delay or replace its answer (the answer is lost)

    def problem(self) -> str | None:
        """Why this spec is unusable, or None."""
        if self.errcode is None and self.http_status is None and not self.malformed and self.delay_s <= 0:
            return "a fault needs errcode, http_status, malformed or a positive delay_s"
        if self.http_status is not None and not 100 <= self.http_status <= 599:
            return "http_status must be an HTTP status code"
        if self.errcode == 0:
            return "errcode 0 is success, not a fault"
        if self.times is not None and self.times < 1:
            return "times must be at least 1 (leave it out for no limit)"
        if self.delay_s < 0:
            return "delay_s cannot be negative"
        return None


class FaultView(msgspec.Struct):
    """A fault as the control API shows it."""

    id: int
    spec: FaultSpec
    remaining: int | None
    exempt: list[str]


@dataclass
class Fault:
    id: int
    spec: FaultSpec
    remaining: int | None
    exempt: set[str] = field(default_factory=set)  # accounts that cleared their quota under a keyless 45009

    def matches(self, endpoint: str, keys: Iterable[str]) -> bool:
        if self.spec.endpoint not in ("*", endpoint):
            return False
        keys = set(keys)
        if keys & self.exempt:
            return False
        return self.spec.key is None or self.spec.key in keys

    def view(self) -> FaultView:
        return FaultView(self.id, self.spec, self.remaining, sorted(self.exempt))


class FaultBook:
    """The faults in force."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(self._next_id, spec, spec.times)
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def clear(self) -> int:
        """Remove every fault; returns how many there were."""
        count = len(self._faults)
        self._faults.clear()
        return count

    def take(self, endpoint: str, keys: Iterable[str]) -> FaultSpec | None:
        """The fault that hits this call, counting one use of it."""
        keys = tuple(keys)
        for fault in self._faults:
            if fault.matches(endpoint, keys):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault.spec
        return None

    def clear_quota(self, appid: str) -> None:
        """clear_quota for ``appid``: its own 45009 faults go, keyless ones spare it from now on."""
        for fault in list(self._faults):
            if fault.spec.errcode != QUOTA_ERRCODE:
                continue
            if fault.spec.key == appid:
                self._faults.remove(fault)
            elif fault.spec.key is None:
                fault.exempt.add(appid)

    def views(self) -> list[FaultView]:
        return [fault.view() for fault in self._faults]


class CounterView(msgspec.Struct):
    """Calls of one endpoint: in all, and per account (the most specific appid of each call); ``ok``
    counts those answered with success (a token minted, say), the rest having been refused."""

    total: int
    by_key: dict[str, int]
    ok: int
    ok_by_key: dict[str, int]


class Counters:
    """How many times each WeChat endpoint was called, and how many of those calls succeeded."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._ok: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def hit(self, endpoint: str, key: str | None) -> None:
        self._counts[endpoint][key or "-"] += 1

    def succeeded(self, endpoint: str, key: str | None) -> None:
        self._ok[endpoint][key or "-"] += 1

    def reset(self) -> None:
        self._counts.clear()
        self._ok.clear()

    def view(self) -> dict[str, CounterView]:
        return {
            endpoint: CounterView(
                sum(counts.values()),
                dict(sorted(counts.items())),
                sum(self._ok[endpoint].values()),
                dict(sorted(self._ok[endpoint].items())),
            )
            for endpoint, counts in sorted(self._counts.items())
        }
