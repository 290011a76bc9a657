"""The control API under /sim: what an administrator, WeChat's scheduler or a test would do to the world.

    POST   /components                      SimComponent fields: add, or replace keeping tickets and tokens
    GET    /components/{appid}              its tickets (newest first) and component tokens
    POST   /components/{appid}/push-ticket  push a new ticket now -> {ticket, status, body, delivered, error}
    POST   /components/{appid}/messages     {authorizer_appid, fields: {MsgType, Content / Event …, a
                                             block such as ScanCodeInfo: {ScanType, ScanResult}},
                                             from_user?} a follower's message or event, relayed to the
                                             message URL as WeChat does: sent again while no answer comes
                                             in message_timeout_s, message_attempts times in all
                                             -> {id, component_appid, authorizer_appid, message, url,
                                             status, body, error, attempts: [{status, body, error,
                                             elapsed_ms}]}; status, body, error: the last attempt's
    POST   /authorizers                     {authorizer_appid, kind, nick_name, principal_name, user_name?,
                                             verify_type?, service_type?, followers?,
                                             components: {component_appid: [func ids]}} -> {refresh_tokens}
    POST   /pre-auth-codes/{code}/approve   {authorizer_appid, func_ids, redirect_uri?, kind?, nick_name?,
                                             principal_name?, push_now?} -> {auth_code, expires_in,
                                             redirect_url, push}; push_now false holds the push back
    POST   /auth-codes/{code}/push          push the authorization event carrying that code (now, or
                                             again, as WeChat's retries do) -> the push record
    POST   /authorizations/revoke           {component_appid, authorizer_appid} -> {push}
    POST   /open-accounts                   {open_appid, principal_name, verified?, created_by_api?, members?}
    POST   /login-codes                     {authorizer_appid, user?} a user's wx.login in a mini program
                                             -> {code, expires_in, openid}: the js_code its server sends
                                             to sns/component/jscode2session (once, within 5 minutes)
    POST   /oauth-codes                     {authorizer_appid, component_appid, scope?, user?} a user agrees
                                             on an official account's authorize page opened with that
                                             component_appid (scope snsapi_base | snsapi_userinfo) ->
                                             {code, expires_in, openid}: the code WeChat redirects with,
                                             for sns/oauth2/component/access_token. ``user`` names the
                                             person (default "0": an official account's first follower)
    GET    /requests                        the last 1000 calls of WeChat's API: {endpoint, method, query}
    POST   /expire                          {what: component|authorizer|jsapi|all, appid?} -> {count}
    POST   /clock/advance                   {seconds} -> {now}
    POST   /faults                          a FaultSpec -> the fault; GET lists them, DELETE clears them
    GET    /counters                        {endpoint: {total, by_key}}; POST /counters/reset zeroes them
    GET    /pushes, /relays                 the last 1000 pushes to event URLs, relays to message URLs
    GET    /messages, /state                the customer-service messages sent; the whole world

Refusals are 4xx ``{"status_code", "detail"}``; WeChat's own API never answers this way.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from gateway.simulator.config import SimComponent
from gateway.simulator.errors import ControlError
from gateway.simulator.faults import CounterView, FaultSpec, FaultView
from gateway.simulator.pushes import MessagePushed, Pusher, PushRecord
from gateway.simulator.sns import IssuedCode, Scope
from gateway.simulator.state import AccountProfile, CustomMessage, Kind, OpenAccount, Received, World
from gateway.simulator.views import ComponentView, StateView, component_view, state_view
from gateway.simulator.wechat_routes import ENDPOINTS

__all__ = ["ApproveBody", "Approved", "SimController", "authorize"]

Tag = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]  # an XML element name WeChat uses


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
    push_now: bool = True  # False: push later with /sim/auth-codes/{code}/push (a race of the two paths)

    def profile(self) -> AccountProfile | None:
        if self.kind is None or self.nick_name is None or self.principal_name is None:
            return None
        return AccountProfile(self.authorizer_appid, self.kind, self.nick_name, self.principal_name)


class Relay(msgspec.Struct, forbid_unknown_fields=True):
    """A user's message or event: its elements after the addressing WeChat adds (a value may be one
    block of elements), and who writes (an openid among the account's followers; the first when left
    out)."""

    authorizer_appid: str
    fields: dict[Tag, str | int | dict[Tag, str | int]]
    from_user: str | None = None


class LoginCodeBody(msgspec.Struct, forbid_unknown_fields=True):
    authorizer_appid: str
    user: str = "0"


class OAuthCodeBody(msgspec.Struct, forbid_unknown_fields=True):
    authorizer_appid: str
    component_appid: str
    scope: Scope = "snsapi_base"
    user: str = "0"


class Requests(msgspec.Struct):
    requests: list[Received]


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


class Relays(msgspec.Struct):
    relays: list[MessagePushed]


class Messages(msgspec.Struct):
    messages: list[CustomMessage]


async def authorize(world: World, pusher: Pusher, pre_auth_code: str, choice: ApproveBody) -> Approved:
    """Approve a pre-auth code, push the resulting event and build the browser's redirect."""
    approval = world.approve(pre_auth_code, choice.authorizer_appid, choice.func_ids, choice.profile())
    record = None
    if approval.event is not None and choice.push_now:
        record = await pusher.deliver(approval.event)
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
    async def put_component(
        self, world: NamedDependency[World], data: JSONBody[SimComponent]
    ) -> ComponentView:
        """Add a component or replace its settings."""
        world.put_component(data)
        return component_view(world, data.appid)

    @get("/components/{appid:str}")
    async def get_component(self, world: NamedDependency[World], appid: FromPath[str]) -> ComponentView:
        """A component's tickets and tokens."""
        return component_view(world, appid)

    @post("/components/{appid:str}/push-ticket", status_code=200)
    async def push_ticket(self, pusher: NamedDependency[Pusher], appid: FromPath[str]) -> TicketPushed:
        """Issue a ticket and push it now, as the 10-minute schedule would."""
        ticket, record = await pusher.push_ticket(appid)
        return TicketPushed(ticket, record.status, record.body, record.delivered, record.error)

    @post("/components/{appid:str}/messages", status_code=200)
    async def relay_message(
        self,
        world: NamedDependency[World],
        pusher: NamedDependency[Pusher],
        appid: FromPath[str],
        data: JSONBody[Relay],
    ) -> MessagePushed:
        """A follower writes to an account (or triggers an event); WeChat relays it to the component,
        retrying while no answer comes."""
        message = world.user_message(appid, data.authorizer_appid, data.fields, data.from_user)
        return await pusher.relay(message)

    @post("/authorizers", status_code=201)
    async def seed_authorizer(self, world: NamedDependency[World], data: JSONBody[SeedAuthorizer]) -> Seeded:
        """Create or update an account and its authorizations, without a push."""
        return Seeded(world.seed_authorizer(data, data.components))

    @post("/pre-auth-codes/{code:str}/approve", status_code=200)
    async def approve(
        self,
        world: NamedDependency[World],
        pusher: NamedDependency[Pusher],
        code: FromPath[str],
        data: JSONBody[ApproveBody],
    ) -> Approved:
        """An administrator approves a pre-auth code on the authorization page."""
        return await authorize(world, pusher, code, data)

    @post("/auth-codes/{code:str}/push", status_code=200)
    async def push_authorization(
        self, world: NamedDependency[World], pusher: NamedDependency[Pusher], code: FromPath[str]
    ) -> PushRecord:
        """Push the authorization event that carries ``code``."""
        return await pusher.deliver(world.authorization_event(code))

    @post("/authorizations/revoke", status_code=200)
    async def revoke(
        self, world: NamedDependency[World], pusher: NamedDependency[Pusher], data: JSONBody[Revoke]
    ) -> Revoked:
        """The account cancels its authorization; pushes ``unauthorized``."""
        return Revoked(await pusher.deliver(world.revoke(data.component_appid, data.authorizer_appid)))

    @post("/open-accounts", status_code=201)
    async def seed_open_account(
        self, world: NamedDependency[World], data: JSONBody[OpenAccount]
    ) -> OpenAccount:
        """Create or replace an open account."""
        world.seed_open_account(data)
        return data

    @post("/login-codes", status_code=201)
    async def login_code(self, world: NamedDependency[World], data: JSONBody[LoginCodeBody]) -> IssuedCode:
        """A user's wx.login in a mini program: the js_code its server exchanges."""
        return world.logins.login_code(data.authorizer_appid, data.user)

    @post("/oauth-codes", status_code=201)
    async def oauth_code(self, world: NamedDependency[World], data: JSONBody[OAuthCodeBody]) -> IssuedCode:
        """A user agrees on an official account's web authorization page opened for a component."""
        return world.logins.oauth_code(data.authorizer_appid, data.component_appid, data.user, data.scope)

    @get("/requests")
    async def requests(self, world: NamedDependency[World]) -> Requests:
        """The calls of WeChat's API as they arrived (the last 1000)."""
        return Requests(list(world.received))

    @post("/expire", status_code=200)
    async def expire(self, world: NamedDependency[World], data: JSONBody[Expire]) -> Count:
        """Make tokens expire now (42001)."""
        return Count(world.expire(data.what, data.appid))

    @post("/clock/advance", status_code=200)
    async def advance(self, world: NamedDependency[World], data: JSONBody[Advance]) -> Clock:
        """Move the world's clock forward."""
        return Clock(world.advance(data.seconds))

    @post("/faults", status_code=201)
    async def add_fault(self, world: NamedDependency[World], data: JSONBody[FaultSpec]) -> FaultView:
        """Inject a fault."""
        if data.endpoint != "*" and data.endpoint not in ENDPOINTS:
            raise ControlError(400, f"unknown endpoint {data.endpoint!r}; one of {sorted(ENDPOINTS)} or '*'")
        if problem := data.problem():
            raise ControlError(400, problem)
        return world.faults.add(data).view()

    @get("/faults")
    async def list_faults(self, world: NamedDependency[World]) -> list[FaultView]:
        """The faults in force."""
        return world.faults.views()

    @delete("/faults", status_code=200)
    async def clear_faults(self, world: NamedDependency[World]) -> Count:
        """Remove every fault."""
        return Count(world.faults.clear())

    @get("/counters")
    async def counters(self, world: NamedDependency[World]) -> dict[str, CounterView]:
        """Calls per WeChat endpoint, in all and per account."""
        return world.counters.view()

    @post("/counters/reset", status_code=200)
    async def reset_counters(self, world: NamedDependency[World]) -> Count:
        """Zero the counters; returns how many calls they held."""
        count = sum(view.total for view in world.counters.view().values())
        world.counters.reset()
        return Count(count)

    @get("/pushes")
    async def pushes(self, pusher: NamedDependency[Pusher]) -> Pushes:
        """Every push and how its receiver answered (the last 1000)."""
        return Pushes(pusher.log)

    @get("/relays")
    async def relays(self, pusher: NamedDependency[Pusher]) -> Relays:
        """Every user message relayed, with each attempt and its answer (the last 1000)."""
        return Relays(pusher.relays)

    @get("/messages")
    async def messages(self, world: NamedDependency[World]) -> Messages:
        """Customer-service messages sent."""
        return Messages(list(world.messages))

    @get("/state")
    async def state(self, world: NamedDependency[World]) -> StateView:
        """The whole world at once."""
        return state_view(world)
