"""The control API under /sim: what an administrator, WeChat's scheduler or a test would do to the world.

Refusals are 4xx ``{"status_code", "detail"}``; WeChat's own API never answers this way.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlencode

import msgspec
from litestar import Controller, delete, get, post

from gateway.simulator.config import SimComponent
from gateway.simulator.errors import ControlError
from gateway.simulator.faults import CounterView, FaultSpec, FaultView
from gateway.simulator.pushes import Pusher, PushRecord
from gateway.simulator.state import AccountProfile, CustomMessage, Kind, OpenAccount, World
from gateway.simulator.views import ComponentView, StateView, component_view, state_view
from gateway.simulator.wechat_routes import ENDPOINTS

__all__ = ["ApproveBody", "Approved", "SimController", "authorize"]


class SeedAuthorizer(AccountProfile, forbid_unknown_fields=True):
    """An account and the permission sets it granted, per component_appid."""

    components: dict[str, list[int]] = {}


class ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    """An administrator's choice on the authorization page; kind, nick_name and principal_name create
    an account that was not seeded."""

    authorizer_appid: str
    func_ids: list[int]
    redirect_uri: str | None = None
    kind: Kind | None = None
    nick_name: str | None = None
    principal_name: str | None = None

    def profile(self) -> AccountProfile | None:
        if self.kind is None or self.nick_name is None or self.principal_name is None:
            return None
        return AccountProfile(self.authorizer_appid, self.kind, self.nick_name, self.principal_name)


class Revoke(msgspec.Struct, forbid_unknown_fields=True):
    component_appid: str
    authorizer_appid: str


class Expire(msgspec.Struct, forbid_unknown_fields=True):
    what: Literal["component", "authorizer", "jsapi", "all"]
    appid: str | None = None  # only tokens this appid owns (component or authorizer)


class Advance(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float


class TicketPushed(msgspec.Struct):
    ticket: str
    status: int | None
    body: str | None
    delivered: bool
    error: str | None


class Seeded(msgspec.Struct):
    refresh_tokens: dict[str, str]


class Approved(msgspec.Struct):
    auth_code: str
    expires_in: int
    redirect_url: str | None
    push: PushRecord | None  # None: nothing pushed (unchanged sets)


class Revoked(msgspec.Struct):
    push: PushRecord


class Count(msgspec.Struct):
    count: int


class Clock(msgspec.Struct):
    now: float


class Pushes(msgspec.Struct):
    pushes: list[PushRecord]


class Messages(msgspec.Struct):
    messages: list[CustomMessage]


async def authorize(world: World, pusher: Pusher, pre_auth_code: str, choice: ApproveBody) -> Approved:
    """Approve a pre-auth code, push the resulting event and build the browser's redirect."""
    approval = world.approve(pre_auth_code, choice.authorizer_appid, choice.func_ids, choice.profile())
    record = await pusher.deliver(approval.event) if approval.event is not None else None
    redirect_url = None
    if choice.redirect_uri:
        joiner = "&" if "?" in choice.redirect_uri else "?"
        query = urlencode({"auth_code": approval.auth_code, "expires_in": approval.expires_in})
        redirect_url = f"{choice.redirect_uri}{joiner}{query}"
    return Approved(approval.auth_code, approval.expires_in, redirect_url, record)


class SimController(Controller):
    """Control routes; ``world`` and ``pusher`` are app-level dependencies."""

    path = "/sim"

    @post("/components", status_code=201)
    async def put_component(self, world: World, data: SimComponent) -> ComponentView:
        world.put_component(data)
        return component_view(world, data.appid)

    @get("/components/{appid:str}")
    async def get_component(self, world: World, appid: str) -> ComponentView:
        return component_view(world, appid)

    @post("/components/{appid:str}/push-ticket", status_code=200)
    async def push_ticket(self, pusher: Pusher, appid: str) -> TicketPushed:
        ticket, record = await pusher.push_ticket(appid)
        return TicketPushed(ticket, record.status, record.body, record.delivered, record.error)

    @post("/authorizers", status_code=201)
    async def seed_authorizer(self, world: World, data: SeedAuthorizer) -> Seeded:
        return Seeded(world.seed_authorizer(data, data.components))

    @post("/pre-auth-codes/{code:str}/approve", status_code=200)
    async def approve(self, world: World, pusher: Pusher, code: str, data: ApproveBody) -> Approved:
        return await authorize(world, pusher, code, data)

    @post("/authorizations/revoke", status_code=200)
    async def revoke(self, world: World, pusher: Pusher, data: Revoke) -> Revoked:
        return Revoked(await pusher.deliver(world.revoke(data.component_appid, data.authorizer_appid)))

    @post("/open-accounts", status_code=201)
    async def seed_open_account(self, world: World, data: OpenAccount) -> OpenAccount:
        world.seed_open_account(data)
        return data

    @post("/expire", status_code=200)
    async def expire(self, world: World, data: Expire) -> Count:
        return Count(world.expire(data.what, data.appid))

    @post("/clock/advance", status_code=200)
    async def advance(self, world: World, data: Advance) -> Clock:
        return Clock(world.advance(data.seconds))

    @post("/faults", status_code=201)
    async def add_fault(self, world: World, data: FaultSpec) -> FaultView:
        if data.endpoint != "*" and data.endpoint not in ENDPOINTS:
            raise ControlError(400, f"unknown endpoint {data.endpoint!r}; one of {sorted(ENDPOINTS)} or '*'")
        if problem := data.problem():
            raise ControlError(400, problem)
        return world.faults.add(data).view()

    @get("/faults")
    async def list_faults(self, world: World) -> list[FaultView]:
        return world.faults.views()

    @delete("/faults", status_code=200)
    async def clear_faults(self, world: World) -> Count:
        return Count(world.faults.clear())

    @get("/counters")
    async def counters(self, world: World) -> dict[str, CounterView]:
        return world.counters.view()

    @post("/counters/reset", status_code=200)
    async def reset_counters(self, world: World) -> Count:
        count = sum(view.total for view in world.counters.view().values())
        world.counters.reset()
        return Count(count)

    @get("/pushes")
    async def pushes(self, pusher: Pusher) -> Pushes:
        return Pushes(pusher.log)

    @get("/messages")
    async def messages(self, world: World) -> Messages:
        return Messages(list(world.messages))

    @get("/state")
    async def state(self, world: World) -> StateView:
        return state_view(world)
