"""Read-only views of the world for the control API: what a test or a demo user wants to see."""

from __future__ import annotations

import msgspec

from gateway.simulator.faults import FaultView
from gateway.simulator.state import Kind, OpenAccount, World

__all__ = [
    "AuthorizationView",
    "AuthorizerView",
    "ComponentView",
    "StateView",
    "component_view",
    "state_view",
]


class TicketView(msgspec.Struct):
    ticket: str
    pushed_at: int
    valid: bool


class TokenView(msgspec.Struct):
    token: str
    expires_at: int
    retired_at: int | None
    state: str  # valid | expired (42001) | retired (40001)


class ComponentView(msgspec.Struct):
    """A component's tickets (newest first) and component_access_tokens."""

    appid: str
    event_url: str | None
    latest_ticket: str | None
    tickets: list[TicketView]
    component_tokens: list[TokenView]


class ComponentSummary(msgspec.Struct):
    appid: str
    event_url: str | None
    latest_ticket: str | None
    ticket_count: int


class AuthorizerView(msgspec.Struct):
    authorizer_appid: str
    kind: Kind
    nick_name: str
    principal_name: str
    user_name: str | None
    verify_type: int
    service_type: int | None
    followers: int
    open_appid: str | None


class AuthorizationView(msgspec.Struct):
    component_appid: str
    authorizer_appid: str
    func_ids: list[int]
    status: str  # authorized | revoked
    auth_time: int
    refresh_token: str


class StateView(msgspec.Struct):
    """Everything at once: ``GET /sim/state``."""

    now: float
    components: list[ComponentSummary]
    authorizers: list[AuthorizerView]
    authorizations: list[AuthorizationView]
    open_accounts: list[OpenAccount]
    faults: list[FaultView]


def component_view(world: World, appid: str) -> ComponentView:
    """One component's tickets and tokens."""
    component = world.component(appid)
    now = world.now()
    tickets = [
        TicketView(ticket, int(at), world.ticket_valid(at))
        for ticket, at in reversed(component.tickets.items())
    ]
    tokens = [
        TokenView(
            token.value,
            int(token.expires_at),
            None if token.retired_at is None else int(token.retired_at),
            token.state(now),
        )
        for token in world.tokens.of((appid, None))
    ]
    return ComponentView(
        appid, component.config.event_url, tickets[0].ticket if tickets else None, tickets, tokens
    )


def state_view(world: World) -> StateView:
    """The whole world, without secrets of the components' configuration."""
    components = [
        ComponentSummary(
            appid,
            c.config.event_url,
            next(reversed(c.tickets), None),
            len(c.tickets),
        )
        for appid, c in world.components.items()
    ]
    authorizers = []
    for appid, authorizer in world.authorizers.items():
        profile = authorizer.profile
        bound = world.open_account_of(appid)
        authorizers.append(
            AuthorizerView(
                appid,
                profile.kind,
                profile.nick_name,
                profile.principal_name,
                profile.user_name,
                profile.verify_type,
                profile.service_type,
                len(authorizer.followers),
                bound.open_appid if bound else None,
            )
        )
    authorizations = [
        AuthorizationView(
            a.component_appid,
            a.authorizer_appid,
            a.func_ids,
            "authorized" if a.live else "revoked",
            a.auth_time,
            a.refresh_token,
        )
        for a in world.authorizations.values()
    ]
    return StateView(
        world.now(),
        components,
        authorizers,
        authorizations,
        list(world.open_accounts.values()),
        world.faults.views(),
    )
