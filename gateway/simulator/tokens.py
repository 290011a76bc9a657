"""Access tokens as WeChat hands them out: random, 7200 s, and superseded with a short overlap.

A token dies in one of two ways, and WeChat tells them apart: its lifetime ran out (42001), or it was
retired because a newer one was minted and the overlap passed, or its authorization was revoked or
re-authorized (40001).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.simulator.errors import WeChatError

__all__ = ["TOKEN_TTL_S", "IssuedToken", "Owner", "TokenBook"]

TOKEN_TTL_S = 7200

# (component_appid, authorizer_appid): authorizer_appid is None for a component_access_token
Owner = tuple[str, str | None]


@dataclass
class IssuedToken:
    """One access token and the moments it stops working."""

    value: str
    owner: Owner
    expires_at: float
    retired_at: float | None = None

    @property
    def component_appid(self) -> str:
        return self.owner[0]

    @property
    def authorizer_appid(self) -> str | None:
        return self.owner[1]

    def state(self, now: float) -> str:
        """``valid``, ``retired`` (40001) or ``expired`` (42001)."""
        if self.retired_at is not None and now >= self.retired_at:
            return "retired"
        if now >= self.expires_at:
            return "expired"
        return "valid"

    def check(self, now: float) -> None:
        """Raise the error WeChat answers for this token at ``now``, if any."""
        match self.state(now):
            case "retired":
                raise WeChatError(40001)
            case "expired":
                raise WeChatError(42001)


class TokenBook:
    """Every access token ever minted, and the current one of each owner."""

    def __init__(self, overlap_s: float) -> None:
        self._overlap_s = overlap_s
        self._tokens: dict[str, IssuedToken] = {}
        self._current: dict[Owner, IssuedToken] = {}

    def mint(self, owner: Owner, now: float) -> IssuedToken:
        """A new token for ``owner``; the one it replaces keeps working for the overlap only."""
        previous = self._current.get(owner)
        if previous is not None:
            self._retire(previous, now + self._overlap_s)
        token = IssuedToken(secrets.token_urlsafe(96), owner, now + TOKEN_TTL_S)
        self._tokens[token.value] = token
        self._current[owner] = token
        return token

    def find(self, value: str) -> IssuedToken | None:
        """The token with this value, alive or not."""
        return self._tokens.get(value)

    def retire_owner(self, owner: Owner, now: float) -> None:
        """Revocation: every token of ``owner`` stops working now."""
        for token in self.of(owner):
            self._retire(token, now)
        self._current.pop(owner, None)

    def of(self, owner: Owner) -> list[IssuedToken]:
        """The tokens of ``owner``, oldest first."""
        return [token for token in self._tokens.values() if token.owner == owner]

    def __iter__(self) -> Iterator[IssuedToken]:
        return iter(self._tokens.values())

    @staticmethod
    def _retire(token: IssuedToken, at: float) -> None:
        token.retired_at = at if token.retired_at is None else min(token.retired_at, at)
