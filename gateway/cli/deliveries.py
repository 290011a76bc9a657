"""``gateway deliveries list | replay``: deliveries of user messages and events to subscribers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.cli.shared import (
    Commands,
    add_config_flag,
    add_json_flag,
    positive_int,
    print_json,
    print_table,
    with_services,
)
from gateway.container import Services
from gateway.errors import DeliveryUnknown
from gateway.http.deliveries import DeliveriesPage
from gateway.store.deliveries import DELIVERY_STATUSES, DeliveryRecord, is_record_id

__all__ = ["add_commands"]

DELIVERIES_LISTED = 50
_COLUMNS = (
    "id",
    "status",
    "client",
    "url",
    "authorizer",
    "type",
    "attempts",
    "created (UTC)",
    "last error",
)


def add_commands(commands: Commands) -> None:
    """``deliveries list`` and ``deliveries replay``."""
    deliveries = commands.add_parser(
        "deliveries", help="deliveries of user messages and events to subscribers"
    )
    deliveries_commands = deliveries.add_subparsers(
        dest="deliveries_command", required=True, metavar="ACTION"
    )
    listing = deliveries_commands.add_parser("list", help="deliveries, newest first")
    listing.add_argument("--status", choices=DELIVERY_STATUSES, help="only those in this state")
    listing.add_argument("--client", metavar="ID", help="only this client's")
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=DELIVERIES_LISTED,
        metavar="N",
        help=f"at most N (default {DELIVERIES_LISTED})",
    )
    listing.add_argument(
        "--before", type=_record_id, metavar="ID", help="only those older than this one (the next page)"
    )
    listing.add_argument("--json", action="store_true", help="print the JSON of GET /v1/deliveries")
    listing.set_defaults(run=_list)
    replay = deliveries_commands.add_parser(
        "replay", help="make deliveries due now, whatever their state (exit 1 if an id is unknown)"
    )
    replay.add_argument("ids", nargs="+", metavar="ID")
    add_json_flag(replay, "the replayed deliveries as a JSON list (the items of GET /v1/deliveries)")
    replay.set_defaults(run=_replay)
    for sub in (listing, replay):
        add_config_flag(sub)


def _list(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        items, more = await services.store.deliveries.page(
            status=args.status, client_id=args.client, before=args.before, limit=args.limit
        )
        next_cursor = items[-1].id if more and items else None
        if args.json:
            print_json(DeliveriesPage(items, next_cursor))
            return 0
        _print_deliveries(items)
        if next_cursor is not None:
            print(f"more follow: add --before {next_cursor}", file=sys.stderr)
        return 0

    return with_services(args, run)


def _replay(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        replayed: list[DeliveryRecord] = []
        unknown = 0
        try:
            for delivery_id in dict.fromkeys(args.ids):
                try:
                    replayed.append(await services.deliveries.replay(delivery_id, actor="cli"))
                except DeliveryUnknown as exc:
                    print(f"gateway: {exc.message}", file=sys.stderr)
                    unknown += 1
        finally:
            # Written now, so a failure to write it is seen; the lifespan's last flush only logs one.
            await services.audit.flush()
        if args.json:
            print_json(replayed)
        elif replayed:
            _print_deliveries(replayed)
        if replayed:
            print(
                f"{len(replayed)} replayed: due now; a running `gateway serve` delivers them at its next "
                "poll",
                file=sys.stderr if args.json else sys.stdout,  # stdout holds the JSON document alone
            )
        return 1 if unknown else 0

    return with_services(args, run)


def _print_deliveries(records: Sequence[DeliveryRecord]) -> None:
    """``records`` as a table on stdout, columns as wide as their widest cell."""
    if not records:
        print("no deliveries")
        return
    print_table(_COLUMNS, [_delivery_row(r) for r in records])


def _delivery_row(record: DeliveryRecord) -> tuple[str, ...]:
    created = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        record.id,
        record.status,
        record.client,
        record.url,
        record.authorizer_appid,
        f"event.{record.event}" if record.event else record.msg_type,
        str(record.attempts),
        created,
        record.last_error or "-",
    )


def _record_id(text: str) -> str:
    if not is_record_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a delivery id")
    return text
