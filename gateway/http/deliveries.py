"""Deliveries of user messages to subscribers, for administrators (scope ``admin``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from gateway.delivery.worker import DeliveryService
from gateway.errors import DeliveryUnknown, InvalidCursor, filter_text
from gateway.http.guards import CLIENT_KEY, Requires
from gateway.http.openapi import V1_ERRORS
from gateway.registry.model import Client
from gateway.store import Store
from gateway.store.deliveries import DeliveryRecord, DeliveryStatus, is_record_id

__all__ = ["DeliveriesController", "DeliveriesPage"]

MAX_PAGE = 500


class DeliveriesPage(msgspec.Struct, frozen=True):
    """``GET /v1/deliveries``: newest first; ``next_cursor`` reads on."""

    items: list[DeliveryRecord]
    next_cursor: str | None


class DeliveriesController(Controller):
    """List deliveries and deliver one again."""

    path = "/v1/deliveries"
    tags = ["deliveries"]
    guards = [Requires("admin")]
    security = CLIENT_KEY

    @get("/", summary="Deliveries to subscribers", cache=False, responses=V1_ERRORS)
    async def deliveries(
        self,
        store: NamedDependency[Store],
        status: Annotated[
            Literal[DeliveryStatus, ""], QueryParameter(description="Only deliveries in this state")
        ] = "",
        subscriber: Annotated[
            str,
            QueryParameter(name="client", description="Only deliveries to this subscriber (a client id)"),
        ] = "",
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_PAGE, description="Deliveries per page (default 100)")
        ] = 100,
        cursor: Annotated[
            str, QueryParameter(description="The next_cursor of the page before: older deliveries")
        ] = "",
    ) -> DeliveriesPage:
        """Filtered by ``status`` (pending, delivered, failed) and ``client``; ``limit``, ``cursor``."""
        if cursor and not is_record_id(cursor):
            raise InvalidCursor()
        items, more = await store.deliveries.page(
            status=status or None,
            client_id=filter_text("client", subscriber),
            before=cursor or None,
            limit=limit,
        )
        return DeliveriesPage(items, items[-1].id if more and items else None)

    @post("/{delivery_id:str}/replay", status_code=200, summary="Deliver again", responses=V1_ERRORS)
    async def replay(
        self,
        delivery_id: FromPath[str],
        client: NamedDependency[Client],
        deliveries: NamedDependency[DeliveryService],
    ) -> DeliveryRecord:
        """Make the delivery due now with a fresh 24-hour deadline (a dead letter, or one the subscriber
        lost); audited."""
        if not is_record_id(delivery_id):
            raise DeliveryUnknown(delivery_id, "no such delivery")
        return await deliveries.replay(delivery_id, actor=client.id)
