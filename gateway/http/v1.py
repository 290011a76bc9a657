"""The internal apps' API (``/v1``), authenticated by client key."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.access import IssuedTicket, IssuedToken, TokenVending, authenticate
from gateway.registry import Client, Registry

__all__ = ["AuthorizerTokensController", "provide_client"]

_NO_STORE = {"Cache-Control": "no-store"}


def provide_client(request: Request[Any, Any, Any], registry: NamedDependency[Registry]) -> Client:
    """The calling client, from its bearer key (401 when missing or unknown)."""
    return authenticate(registry, request.headers.get("authorization"))


class AuthorizerTokensController(Controller):
    """Tokens and tickets of authorizers, for clients with the ``token`` scope."""

    path = "/v1/authorizers"
    tags = ["tokens"]

    @get("/{appid:str}/access-token", summary="An authorizer's access token")
    async def access_token(
        self, appid: FromPath[str], client: NamedDependency[Client], vending: NamedDependency[TokenVending]
    ) -> Response[IssuedToken]:
        """The authorizer_access_token, from the platform routing picks for this authorizer."""
        return Response(await vending.access_token(client, appid), headers=_NO_STORE)

    @get("/{appid:str}/jsapi-ticket", summary="An authorizer's JS-SDK ticket")
    async def jsapi_ticket(
        self, appid: FromPath[str], client: NamedDependency[Client], vending: NamedDependency[TokenVending]
    ) -> Response[IssuedTicket]:
        """The JS-SDK ticket, cached centrally like a token."""
        return Response(await vending.jsapi_ticket(client, appid), headers=_NO_STORE)
