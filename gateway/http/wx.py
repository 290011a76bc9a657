"""``/wx``: the WeChat-compatible proxy. Existing SDKs point their API host here and change nothing else."""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, HttpMethod, Request, Response, get, route
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from gateway.errors import WxError
from gateway.http.guards import CLIENT_KEY
from gateway.http.openapi import GATEWAY_TOKEN, WX_FORWARDED, WX_TOKEN
from gateway.proxy.forwarding import Reply
from gateway.proxy.policy import WxProxy

__all__ = ["FORWARD_TEMPLATE", "WxController", "answer", "is_api_path"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # WeChat's largest uploads (video) are 10 MB
STABLE_TOKEN_MAX_BODY = 4096  # four short members
_METHODS: list[HttpMethod] = [
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.DELETE,
    HttpMethod.PATCH,
]
_API_PATH = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*")
# The forward route's template, as Litestar sets it in the scope (the metrics' label).
FORWARD_TEMPLATE = "/wx/{api}"


def is_api_path(path: str) -> bool:
    """Whether ``path`` (without its leading slash) names a WeChat API: plain segments, none empty,
    ``.`` or ``..``."""
    return bool(_API_PATH.fullmatch(path)) and not any(part in ("", ".", "..") for part in path.split("/"))


def _api_path(path: str) -> str:
    path = path.lstrip("/")
    if not is_api_path(path):
        raise WxError(40066, "invalid url: not a WeChat API path")
    return path


def answer(reply: Reply) -> Response[bytes] | Stream:
    """The response of a forwarded call: WeChat's answer, whole or streamed."""
    if reply.body is not None:
        return Response(reply.body, status_code=reply.status, headers=reply.headers)
    return Stream(reply.stream(), status_code=reply.status, headers=reply.headers)


class WxController(Controller):
    """WeChat's API, through the gateway: gateway tokens in, real tokens substituted."""

    path = "/wx"
    tags = ["wechat-compatible proxy"]

    @route("/", http_method=_METHODS, include_in_schema=False)
    async def root(self) -> None:
        """``/wx`` itself names no API: WeChat's 40066 (invalid url), as every other refusal here."""
        raise NotFoundException

    @get("/cgi-bin/token", summary="A gateway token, in WeChat's shape", responses=WX_TOKEN)
    async def token(
        self,
        request: Request[Any, Any, Any],
        proxy: NamedDependency[WxProxy],
    ) -> Response[dict[str, object]]:
        """``grant_type=client_credential&appid=<authorizer>&secret=<client key>``."""
        query = request.query_params
        answer = await proxy.issue_token(query.get("grant_type"), query.get("appid"), query.get("secret"))
        return Response(answer, headers={"Cache-Control": "no-store"})

    @route(
        "/cgi-bin/stable_token",
        http_method=_METHODS,
        request_max_body_size=STABLE_TOKEN_MAX_BODY,
        summary="A gateway token, in WeChat's shape (stable_token)",
        status_code=200,
        responses=WX_TOKEN,
    )
    async def stable_token(
        self,
        request: Request[Any, Any, Any],
        proxy: NamedDependency[WxProxy],
    ) -> Response[dict[str, object]]:
        """``POST`` ``{"grant_type": "client_credential", "appid": <authorizer>, "secret": <client key>,
        "force_refresh"?}``; answered like ``cgi-bin/token``."""
        if request.method != HttpMethod.POST:
            raise WxError(43002, "require POST method")
        answer = await proxy.issue_stable_token(await request.body())
        return Response(answer, headers={"Cache-Control": "no-store"})

    @route(
        "/component/{platform:str}/{api:path}",
        http_method=_METHODS,
        request_max_body_size=MAX_UPLOAD_BYTES,
        summary="A component API, with the component_access_token",
        status_code=200,
        responses=WX_FORWARDED,
        security=CLIENT_KEY,
    )
    async def component(
        self,
        platform: FromPath[str],
        api: FromPath[str],
        request: Request[Any, Any, Any],
        proxy: NamedDependency[WxProxy],
    ) -> Response[bytes] | Stream:
        """Forwarded with the platform's component_access_token (scope ``component``)."""
        reply = await proxy.component_call(
            platform,
            request.method,
            _api_path(api),
            list(request.query_params.multi_items()),
            request.headers,
            request.stream(),
        )
        return answer(reply)

    @route(
        "/{api:path}",
        http_method=_METHODS,
        request_max_body_size=MAX_UPLOAD_BYTES,
        summary="Any authorizer API, with the real token substituted",
        status_code=200,
        responses=WX_FORWARDED,
        security=GATEWAY_TOKEN,
    )
    async def forward(
        self,
        api: FromPath[str],
        request: Request[Any, Any, Any],
        proxy: NamedDependency[WxProxy],
    ) -> Response[bytes] | Stream:
        """Forwarded byte for byte with the authorizer_access_token of the component serving this API."""
        reply = await proxy.call(
            request.method,
            _api_path(api),
            list(request.query_params.multi_items()),
            request.headers,
            request.stream(),
        )
        return answer(reply)
