"""The simulator's configuration: the components WeChat knows and the pace of its world."""

from __future__ import annotations

import msgspec

__all__ = ["SimComponent", "SimulatorConfig"]


class SimComponent(msgspec.Struct, forbid_unknown_fields=True):
    """A third-party platform as registered on the Open Platform, with its authorization event URL, its
    message-and-event URL (``$APPID$`` in it stands for the authorizer's appid, as in WeChat's console)
    and its 授权发起页域名 ``auth_domain``: the host administrators' browsers must come from to open the
    authorization page, and the host of its redirect URI (WeChat's console takes a bare domain name; here
    ``host:port`` also works, for worlds that run several servers on one loopback address)."""

    appid: str
    secret: str
    token: str
    encoding_aes_key: str
    event_url: str | None = None
    message_url: str | None = None
    auth_domain: str | None = None


class SimulatorConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How the simulated WeChat behaves.

    ``ticket_interval_s`` is the period of ticket pushes (0: no schedule); ``token_overlap_s`` how long a
    superseded access token keeps working; the two TTLs bound pre-auth and authorization codes. A user
    message waits ``message_timeout_s`` for the receiver's answer and is sent ``message_attempts`` times
    in all while none comes (WeChat: 5 s, three times).
    """

    components: list[SimComponent] = msgspec.field(default_factory=list)
    ticket_interval_s: float = 600.0
    push_on_start: bool = True
    token_overlap_s: float = 300.0
    pre_auth_code_ttl_s: int = 600
    auth_code_ttl_s: int = 600
    message_timeout_s: float = 5.0
    message_attempts: int = 3

    def __post_init__(self) -> None:
        if self.message_timeout_s <= 0:
            raise ValueError("message_timeout_s must be positive")
        if self.message_attempts < 1:
            raise ValueError("message_attempts must be at least 1")
