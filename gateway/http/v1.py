"""The internal apps' API (``/v1``), authenticated by client key."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from gateway.access.service import STALE_MAX_LENGTH, IssuedTicket, IssuedToken, TokenVending, require
from gateway.binding.service import OpenBinding, OpenBindingService
from gateway.http.errors import V1_ERRORS
from gateway.http.params import reads_query, text_param
from gateway.onboarding.service import AuthorizationLinks, LinkRequest, Onboarding
from gateway.registry.model import Client

__all__ = [
    "AuthorizerTokensController",
    "OpenBindingController",
    "PlatformsController",
    "provide_client",
]

_NO_STORE = [ResponseHeader(name="Cache-Control", value="no-store")]
_STALE_TOKEN = reads_query(
    text_param(
        "stale",
        "The token WeChat just refused (40001, 40014 or 42001): renewed if it is still the current one",
        max_length=STALE_MAX_LENGTH,
    )
)
_STALE_TICKET = reads_query(
    text_param(
        "stale",
        "The ticket WeChat just refused: renewed if it is still the current one",
        max_length=STALE_MAX_LENGTH,
    )
)


def stale_param(request: Request[Any, Any, Any]) -> str | None:
    """The ``stale`` query parameter as sent (checked by the vending service, after the client's scope);
    a request without a query (nearly all) skips Litestar's parsing of it."""
    return request.query_params.get("stale") if request.scope["query_string"] else None


def authorization_header(request: Request[Any, Any, Any]) -> str | None:
    """The request's first ``Authorization`` header, read from the raw ASGI headers: on the token route,
    Litestar's parsing of every header into its multi-dict costs more than checking the key."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


async def provide_client(request: Request[Any, Any, Any], vending: NamedDependency[TokenVending]) -> Client:
    """The calling client, from its bearer key (401 when missing or unknown; 429 past its rate limit)."""
    return await vending.authenticate(authorization_header(request))


class AuthorizerTokensController(Controller):
    """Tokens and tickets of authorizers, for clients with the ``token`` scope."""

    path = "/v1/authorizers"
    tags = ["tokens"]

    # The hot path takes ONE dependency: Litestar resolves two independent ones in an anyio task group,
    # which costs more than everything else the request does (docs/benchmarks.md).

    @get(
        "/{appid:str}/access-token",
        summary="An authorizer's access token",
        response_headers=_NO_STORE,
        responses=V1_ERRORS,
        operation_class=_STALE_TOKEN,
    )
    async def access_token(
        self, appid: FromPath[str], request: Request[Any, Any, Any], vending: NamedDependency[TokenVending]
    ) -> IssuedToken:
        """The authorizer_access_token, from the platform routing picks for this authorizer; with
        ``stale``, a fresh one if that is the one stored (renewed once however many report it)."""
        client = await vending.authenticate(authorization_header(request))
        return await vending.access_token(client, appid, stale=stale_param(request))

    @get(
        "/{appid:str}/jsapi-ticket",
        summary="An authorizer's JS-SDK ticket",
        response_headers=_NO_STORE,
        responses=V1_ERRORS,
        operation_class=_STALE_TICKET,
    )
    async def jsapi_ticket(
        self, appid: FromPath[str], request: Request[Any, Any, Any], vending: NamedDependency[TokenVending]
    ) -> IssuedTicket:
        """The JS-SDK ticket, cached centrally like a token; with ``stale``, as for the access token."""
        client = await vending.authenticate(authorization_header(request))
        return await vending.jsapi_ticket(client, appid, stale=stale_param(request))


class PlatformsController(Controller):
    """Onboarding: authorization links for administrators (scope ``onboard``)."""

    path = "/v1/platforms"
    tags = ["onboarding"]

    @post(
        "/{platform:str}/authorization-links",
        status_code=200,
        summary="Authorization links",
        responses=V1_ERRORS,
    )
    async def authorization_links(
        self,
        platform: FromPath[str],
        data: JSONBody[LinkRequest],
        client: NamedDependency[Client],
        onboarding: NamedDependency[Onboarding],
    ) -> Response[AuthorizationLinks]:
        """A fresh single-use pre-auth code, as PC and H5 links for the account's administrator."""
        require(client, "onboard")
        return Response(
            await onboarding.create_link(client.id, platform, data), headers={"Cache-Control": "no-store"}
        )


class OpenBindingController(Controller):
    """The binding open account of each authorizer (scope ``bind``)."""

    path = "/v1/authorizers"
    tags = ["binding"]

    @post(
        "/{appid:str}/open-binding",
        status_code=200,
        summary="Bind to its open account (SPEC §11)",
        responses=V1_ERRORS,
    )
    async def open_binding(
        self,
        appid: FromPath[str],
        client: NamedDependency[Client],
        binding: NamedDependency[OpenBindingService],
    ) -> OpenBinding:
        """Bound, newly bound, or bound elsewhere (an audit finding: nothing is ever unbound here); 409
        without calling WeChat where its API cannot bind (another principal, a full open account)."""
        require(client, "bind", appid)
        return await binding.ensure(appid, actor=client.id)
