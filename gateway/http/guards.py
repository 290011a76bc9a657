"""Who may call a ``/v1`` route: one Litestar guard on each controller, `Requires`.

The guard runs before anything else of the route. It refuses a body announced too large (413, as
``before_request`` does elsewhere: guards run first), then reads the bearer key (401 when missing or
unknown), admits the client by its rate limit (429), and checks the scopes the controller asks for (403)
and, on routes of one authorizer, whether the client may act for it (403; 422 for an appid of the wrong
shape), before anything is looked up, so that a refusal says nothing of what exists. The client is then
the request's ``user``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import SecurityRequirement, SecurityScheme

from gateway.access.service import TokenVending, require
from gateway.errors import Forbidden
from gateway.http.limits import refuse_announced_oversize
from gateway.registry.model import Client, Scope

__all__ = [
    "ACCESS",
    "CLIENT_KEY",
    "CLIENT_KEY_SCHEME",
    "Requires",
    "authorization_header",
    "provide_client",
]

ACCESS = "access"
"""The key of ``app.state`` under which `create_app` puts the `TokenVending` the guards admit with."""

CLIENT_KEY: list[SecurityRequirement] = [{"clientKey": []}]
"""The security requirement of every ``/v1`` operation in the OpenAPI document."""

CLIENT_KEY_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    description="A client key from the registry (`gateway new-client-key` makes one): "
    "`Authorization: Bearer <client key>`. What the client may do is its scopes.",
)


def authorization_header(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The request's first ``Authorization`` header, read from the raw ASGI headers: on the token route,
    Litestar's parsing of every header into its multi-dict costs more than checking the key."""
    for name, value in connection.scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def provide_client(request: Request[Client, Any, Any]) -> Client:
    """The ``client`` dependency: the client the controller's guard admitted."""
    return request.user


class Requires:
    """The guard of a ``/v1`` controller: the caller holds one of ``scopes`` (and, with ``authorizer``,
    may act for the ``appid`` of the path)."""

    def __init__(self, *scopes: Scope, authorizer: bool = False) -> None:
        if not scopes or (authorizer and len(scopes) > 1):
            raise ValueError("a guard requires one scope, or several without an authorizer")
        self.scopes = scopes
        self.authorizer = authorizer

    def __repr__(self) -> str:
        return f"Requires({', '.join(map(repr, self.scopes))}, authorizer={self.authorizer})"

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        assert isinstance(connection, Request)  # the guards are on HTTP controllers only
        await refuse_announced_oversize(connection)
        access: TokenVending = connection.app.state[ACCESS]
        client = await access.authenticate(authorization_header(connection))
        connection.scope["user"] = client
        appid = connection.path_params["appid"] if self.authorizer else None
        if len(self.scopes) == 1:
            require(client, self.scopes[0], appid)
        elif not any(scope in client.scopes for scope in self.scopes):
            held = " nor ".join(f"'{scope}'" for scope in self.scopes)
            raise Forbidden(f"client '{client.id}' holds neither the scope {held}")
