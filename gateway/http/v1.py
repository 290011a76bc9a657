"""The internal apps' API (``/v1``), authenticated by client key."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from gateway.access.service import STALE_MAX_LENGTH, IssuedTicket, IssuedToken, TokenVending
from gateway.binding.service import OpenBinding, OpenBindingService
from gateway.http.guards import CLIENT_KEY, Requires
from gateway.http.openapi import V1_ERRORS
from gateway.onboarding.service import AuthorizationLinks, LinkRequest, Onboarding
from gateway.registry.model import Client

__all__ = ["AuthorizerTokensController", "OpenBindingController", "PlatformsController"]

_NO_STORE = [ResponseHeader(name="Cache-Control", value="no-store")]
# Its shape (printable ASCII, no space) is checked by the vending service, after the client's scope.
StaleToken = Annotated[
    str,
    QueryParameter(
        max_length=STALE_MAX_LENGTH,
        description="The token WeChat just refused (40001, 40014 or 42001): renewed if it is still the "
        "current one",
    ),
]
StaleTicket = Annotated[
    str,
    QueryParameter(
        max_length=STALE_MAX_LENGTH,
        description="The ticket WeChat just refused: renewed if it is still the current one",
    ),
]


class AuthorizerTokensController(Controller):
    """Tokens and tickets of authorizers, for clients with the ``token`` scope."""

    path = "/v1/authorizers"
    tags = ["tokens"]
    guards = [Requires("token", authorizer=True)]
    security = CLIENT_KEY

    # The hot path takes ONE dependency: Litestar resolves two independent ones in an anyio task group,
    # which costs more than everything else the request does (docs/benchmarks.md). The client is the
    # request's user, set by the guard.

    @get(
        "/{appid:str}/access-token",
        summary="An authorizer's access token",
        response_headers=_NO_STORE,
        responses=V1_ERRORS,
    )
    async def access_token(
        self,
        appid: FromPath[str],
        request: Request[Client, Any, Any],
        vending: NamedDependency[TokenVending],
        stale: StaleToken = "",
    ) -> IssuedToken:
        """The authorizer_access_token, from the platform routing picks for this authorizer; with
        ``stale``, a fresh one if that is the one stored (renewed once however many report it)."""
        return await vending.access_token(request.user, appid, stale=stale)

    @get(
        "/{appid:str}/jsapi-ticket",
        summary="An authorizer's JS-SDK ticket",
        response_headers=_NO_STORE,
        responses=V1_ERRORS,
    )
    async def jsapi_ticket(
        self,
        appid: FromPath[str],
        request: Request[Client, Any, Any],
        vending: NamedDependency[TokenVending],
        stale: StaleTicket = "",
    ) -> IssuedTicket:
        """The JS-SDK ticket, cached centrally like a token; with ``stale``, as for the access token."""
        return await vending.jsapi_ticket(request.user, appid, stale=stale)


class PlatformsController(Controller):
    """Onboarding: authorization links for administrators (scope ``onboard``)."""

    path = "/v1/platforms"
    tags = ["onboarding"]
    guards = [Requires("onboard")]
    security = CLIENT_KEY

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
        return Response(
            await onboarding.create_link(client.id, platform, data), headers={"Cache-Control": "no-store"}
        )


class OpenBindingController(Controller):
    """The binding open account of each authorizer (scope ``bind``)."""

    path = "/v1/authorizers"
    tags = ["binding"]
    guards = [Requires("bind", authorizer=True)]
    security = CLIENT_KEY

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
        return await binding.ensure(appid, actor=client.id)
