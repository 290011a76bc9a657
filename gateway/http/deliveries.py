"""Deliveries of user messages to subscribers, for administrators (scope ``admin``)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.access.service import require
from gateway.delivery.worker import DeliveryService
from gateway.errors import DeliveryUnknown, InvalidCursor, InvalidInput, filter_text
from gateway.http.errors import V1_ERRORS
from gateway.http.params import number_param, reads_query, text_param, whole_number
from gateway.registry.model import Client
from gateway.store import Store
from gateway.store.deliveries import DELIVERY_STATUSES, DeliveryRecord, is_record_id

__all__ = ["DeliveriesController", "DeliveriesPage"]

MAX_PAGE = 500
_PAGE = reads_query(
    text_param("status", "Only deliveries in this state", choices=DELIVERY_STATUSES),
    text_param("client", "Only deliveries to this subscriber (a client id)"),
    number_param("limit", "Deliveries per page (default 100)", 1, MAX_PAGE),
    text_param("cursor", "The next_cursor of the page before: older deliveries"),
)


class DeliveriesPage(msgspec.Struct, frozen=True):
    """``GET /v1/deliveries``: newest first; ``next_cursor`` reads on."""

    items: list[DeliveryRecord]
    next_cursor: str | None


class DeliveriesController(Controller):
    """List deliveries and deliver one again."""

    path = "/v1/deliveries"
    tags = ["deliveries"]

    @get("/", summary="Deliveries to subscribers", cache=False, responses=V1_ERRORS, operation_class=_PAGE)
    async def deliveries(
        self, request: Request[Any, Any, Any], client: NamedDependency[Client], store: NamedDependency[Store]
    ) -> DeliveriesPage:
        """Filtered by ``status`` (pending, delivered, failed) and ``client``; ``limit``, ``cursor``."""
        require(client, "admin")
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
        limit = whole_number(params.get("limit"), "limit", 100, 1, MAX_PAGE) or 100
        cursor = params.get("cursor") or None
        if cursor is not None and not is_record_id(cursor):
            raise InvalidCursor()
        items, more = await store.deliveries.page(
            status=status, client_id=filter_text("client", params.get("client")), before=cursor, limit=limit
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
        require(client, "admin")
        if not is_record_id(delivery_id):
            raise DeliveryUnknown(delivery_id, "no such delivery")
        return await deliveries.replay(delivery_id, actor=client.id)
