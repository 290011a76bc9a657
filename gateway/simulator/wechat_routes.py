"""WeChat's API routes, at the root as on api.weixin.qq.com: a table of paths to world rules.

Every call goes the same way: read the token and body, count the call under the account it concerns,
apply an injected fault if one matches, then let the world answer. Errors are HTTP 200 with
``{"errcode", "errmsg"}``, as WeChat does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
from litestar import Request, Response, route
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler

from gateway.simulator import wire
from gateway.simulator.errors import WeChatError
from gateway.simulator.faults import FaultSpec
from gateway.simulator.state import Received, Upload, World

__all__ = ["ENDPOINTS", "JSON_MEDIA_TYPE", "ROUTES", "Call", "Route", "route_handlers", "wechat_json"]

JSON_MEDIA_TYPE = "application/json; encoding=utf-8"  # sic: WeChat's own Content-Type
_T = TypeVar("_T")


@dataclass(frozen=True)
class Call:
    """One request as the world's rules see it."""

    token: str | None
    query: Mapping[str, str]
    raw: bytes = b""
    files: Mapping[str, Upload] = field(default_factory=dict)

    def data(self) -> object:
        """The JSON body (an empty body is ``{}``); 47001 when it is not JSON."""
        if not self.raw.strip():
            return {}
        try:
            return msgspec.json.decode(self.raw)
        except msgspec.DecodeError:
            raise WeChatError(47001) from None

    def body(self, kind: type[_T]) -> _T:
        """The JSON body as ``kind``; 47001 when a field has the wrong type."""
        try:
            return msgspec.convert(self.data(), kind)
        except msgspec.ValidationError:
            raise WeChatError(47001) from None


class Route(NamedTuple):
    """A WeChat endpoint: method, path, the query parameters that may carry its token, and its rule."""

    method: Literal["GET", "POST"]
    path: str
    token_params: tuple[str, ...]
    action: Callable[[World, Call], msgspec.Struct]

    @property
    def endpoint(self) -> str:
        """The name faults and counters use: ``api_authorizer_token``, ``open/bind``, ``wxa/getwxacode``."""
        return re.sub(r"^/(cgi-bin/component/|cgi-bin/)?", "", self.path)


# Newer docs name the component token `access_token=`, older ones (and wechatpy) `component_access_token=`.
COMPONENT = ("component_access_token", "access_token")
AUTHORIZER = ("access_token",)

ROUTES = (
    Route(
        "POST",
        "/cgi-bin/component/api_component_token",
        (),
        lambda w, c: w.component_token(c.body(wire.ComponentTokenBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/component/api_create_preauthcode",
        COMPONENT,
        lambda w, c: w.create_pre_auth_code(c.token, c.body(wire.ComponentAppidBody).component_appid),
    ),
    Route(
        "POST",
        "/cgi-bin/component/api_query_auth",
        COMPONENT,
        lambda w, c: w.query_auth(c.token, c.body(wire.QueryAuthBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/component/api_authorizer_token",
        COMPONENT,
        lambda w, c: w.authorizer_token(c.token, c.body(wire.AuthorizerTokenBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/component/api_get_authorizer_info",
        COMPONENT,
        lambda w, c: w.authorizer_info(c.token, c.body(wire.AuthorizerInfoBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/component/api_get_authorizer_list",
        COMPONENT,
        lambda w, c: w.authorizer_list(c.token, c.body(wire.AuthorizerListBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/clear_quota",
        AUTHORIZER,
        lambda w, c: w.clear_quota(c.token, c.body(wire.AppidBody).appid),
    ),
    Route(
        "POST",
        "/cgi-bin/component/clear_quota/v2",
        (),
        lambda w, c: w.clear_quota_v2(c.body(wire.ClearQuotaV2Body)),
    ),
    Route(
        "POST",
        "/cgi-bin/open/create",
        AUTHORIZER,
        lambda w, c: w.open_create(c.token, c.body(wire.AppidBody).appid),
    ),
    Route(
        "POST", "/cgi-bin/open/bind", AUTHORIZER, lambda w, c: w.open_bind(c.token, c.body(wire.OpenBindBody))
    ),
    Route(
        "POST",
        "/cgi-bin/open/unbind",
        AUTHORIZER,
        lambda w, c: w.open_unbind(c.token, c.body(wire.OpenBindBody)),
    ),
    Route(
        "POST",
        "/cgi-bin/open/get",
        AUTHORIZER,
        lambda w, c: w.open_get(c.token, c.body(wire.AppidBody).appid),
    ),
    Route("GET", "/cgi-bin/open/have", AUTHORIZER, lambda w, c: w.open_have(c.token)),
    Route(
        "GET",
        "/cgi-bin/user/get",
        AUTHORIZER,
        lambda w, c: w.followers(c.token, c.query.get("next_openid", "")),
    ),
    Route("POST", "/cgi-bin/message/custom/send", AUTHORIZER, lambda w, c: w.send_custom(c.token, c.data())),
    Route("POST", "/cgi-bin/menu/create", AUTHORIZER, lambda w, c: w.create_menu(c.token, c.data())),
    Route("GET", "/cgi-bin/menu/get", AUTHORIZER, lambda w, c: w.get_menu(c.token)),
    Route(
        "GET",
        "/cgi-bin/ticket/getticket",
        AUTHORIZER,
        lambda w, c: w.ticket(c.token, c.query.get("type", "")),
    ),
    Route(
        "POST", "/wxa/getwxacode", AUTHORIZER, lambda w, c: w.wxa_code(c.token, c.body(wire.WxaCodeBody).path)
    ),
    Route(
        "POST",
        "/cgi-bin/media/upload",
        AUTHORIZER,
        lambda w, c: w.upload_media(c.token, c.query.get("type", ""), c.files.get("media")),
    ),
    # User logins (gateway.simulator.sns): signed by the component, or an account's own with its secret.
    Route(
        "GET",
        "/sns/component/jscode2session",
        ("component_access_token",),
        lambda w, c: w.logins.component_jscode2session(c.token, c.query),
    ),
    Route(
        "GET",
        "/sns/oauth2/component/access_token",
        ("component_access_token",),
        lambda w, c: w.logins.component_oauth_token(c.token, c.query),
    ),
    Route(
        "GET",
        "/sns/oauth2/component/refresh_token",
        ("component_access_token",),
        lambda w, c: w.logins.component_oauth_refresh(c.token, c.query),
    ),
    Route("GET", "/sns/jscode2session", (), lambda w, c: w.logins.plain_login(c.query)),
    Route("GET", "/sns/oauth2/access_token", (), lambda w, c: w.logins.plain_login(c.query)),
    Route("GET", "/sns/oauth2/refresh_token", (), lambda w, c: w.logins.plain_refresh(c.query)),
    Route("GET", "/sns/userinfo", AUTHORIZER, lambda w, c: w.logins.userinfo(c.token, c.query)),
    Route("GET", "/sns/auth", AUTHORIZER, lambda w, c: w.logins.auth(c.token, c.query)),
    Route(
        "GET",
        "/cgi-bin/media/get",
        AUTHORIZER,
        lambda w, c: w.get_media(c.token, c.query.get("media_id", "")),
    ),
)

ENDPOINTS = frozenset(r.endpoint for r in ROUTES)


def wechat_json(body: msgspec.Struct, status: int = 200) -> Response[bytes]:
    """A JSON answer with WeChat's Content-Type."""
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON_MEDIA_TYPE)


async def _read(request: Request[Any, Any, Any], spec: Route) -> Call:
    token = next((value for name in spec.token_params if (value := request.query_params.get(name))), None)
    query = {name: request.query_params[name] for name in request.query_params}
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return Call(token, query, await request.body())
    files = {}
    for name, value in (await request.form()).multi_items():
        if isinstance(value, UploadFile):
            files[name] = Upload(await value.read(), value.content_type, value.filename)
            await value.close()
    return Call(token, query, files=files)


def _injected(fault: FaultSpec) -> Response[bytes] | None:
    """The answer a fault puts in place of WeChat's, or None when it only delays."""
    status = fault.http_status or 200
    if fault.malformed:
        return Response(b'{"errcode":0,"errmsg":"o', status_code=status, media_type=JSON_MEDIA_TYPE)
    if fault.errcode is not None:
        return wechat_json(WeChatError(fault.errcode).body(), status)
    if fault.http_status is not None:
        page = f"<html><body><h1>{status}</h1></body></html>".encode()
        return Response(page, status_code=status, media_type="text/html")
    return None


async def _answer(world: World, spec: Route, call: Call) -> Response[bytes]:
    world.received.append(Received(spec.endpoint, spec.method, dict(call.query)))
    try:
        data = call.data()
    except WeChatError:
        data = None
    keys = world.call_keys(call.token, data)
    world.counters.hit(spec.endpoint, keys[0] if keys else None)
    fault = world.faults.take(spec.endpoint, keys)
    if fault is not None and not fault.applied:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        injected = _injected(fault)
        if injected is not None:
            return injected
    reply: msgspec.Struct | Response[bytes]
    try:
        reply = spec.action(world, call)
    except WeChatError as exc:
        reply = wechat_json(exc.body())
    else:
        world.counters.succeeded(spec.endpoint, keys[0] if keys else None)
    if fault is not None and fault.applied:  # done at WeChat; the answer comes late or not at all
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        injected = _injected(fault)
        if injected is not None:
            return injected
    if isinstance(reply, Response):
        return reply
    if isinstance(reply, wire.Binary):
        headers = {"Content-Disposition": _disposition(reply.filename)} if reply.filename else None
        return Response(reply.content, media_type=reply.media_type, headers=headers)
    return wechat_json(reply)


def _disposition(filename: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "media"
    return f'attachment; filename="{safe}"'


def _handler(spec: Route) -> HTTPRouteHandler:
    async def handle(request: Request[Any, Any, Any], world: NamedDependency[World]) -> Response[bytes]:
        return await _answer(world, spec, await _read(request, spec))

    return route(spec.path, http_method=spec.method, name=spec.endpoint, status_code=200)(handle)


def route_handlers() -> list[HTTPRouteHandler]:
    """One handler per WeChat endpoint; each needs the ``world`` dependency."""
    return [_handler(spec) for spec in ROUTES]
