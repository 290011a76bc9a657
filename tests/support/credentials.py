"""Credentials of the tests' own for the upstream client's `BoundClient`."""

from __future__ import annotations

from collections.abc import Sequence


class Fixed:
    """A token that cannot be renewed: renewing it gives the same value back, so WeChat's answer stands."""

    def __init__(self, value: str, platform_id: str = "*", param: str = "access_token") -> None:
        self.platform_id = platform_id
        self.param = param
        self.value = value
        self.renewed: list[str] = []  # the stale values it was asked to renew

    async def current(self) -> str:
        return self.value

    async def renew(self, stale: str) -> str:
        self.renewed.append(stale)
        return self.value


class Renewing(Fixed):
    """A token renewed to each of ``renewals`` in turn when reported stale while it is current."""

    def __init__(
        self, value: str, renewals: Sequence[str], platform_id: str = "*", param: str = "access_token"
    ) -> None:
        super().__init__(value, platform_id, param)
        self._renewals = list(renewals)

    async def renew(self, stale: str) -> str:
        self.renewed.append(stale)
        if stale == self.value and self._renewals:
            self.value = self._renewals.pop(0)
        return self.value
