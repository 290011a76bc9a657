"""``gateway rotate-secret-key``, ``gateway new-client-key`` and ``gateway new-webhook-secret``: the key
that seals secrets at rest, the keys internal apps present, and the secrets their deliveries are signed
with."""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import sys

from gateway.cli.shared import Commands, add_json_flag, in_event_loop, positive_int, print_json
from gateway.crypto import WEBHOOK_SECRET_PREFIX
from gateway.settings import Settings
from gateway.store import create_engine
from gateway.store.rotation import DEFAULT_BATCH as ROTATION_BATCH
from gateway.store.rotation import ColumnReport, rotate_secrets

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """``rotate-secret-key``, ``new-client-key`` and ``new-webhook-secret``."""
    rotate = commands.add_parser(
        "rotate-secret-key",
        help="re-seal every secret at rest under $GATEWAY_SECRET_KEY, opening with it or "
        "$GATEWAY_PREVIOUS_SECRET_KEYS (exit 1 if a value opens under neither)",
    )
    rotate.add_argument(
        "--batch-size",
        type=positive_int,
        default=ROTATION_BATCH,
        metavar="N",
        help=f"rows per transaction (default {ROTATION_BATCH})",
    )
    add_json_flag(rotate, "a JSON list of one object per sealed column")
    rotate.set_defaults(run=_rotate_secret_key)

    key = commands.add_parser("new-client-key", help="print a new client key and its key_sha256")
    key.set_defaults(run=_new_client_key)

    webhook = commands.add_parser(
        "new-webhook-secret",
        help="print a new subscription secret in the Standard Webhooks form (whsec_ and 32 random bytes "
        "in base64)",
    )
    webhook.set_defaults(run=_new_webhook_secret)


def _rotate_secret_key(args: argparse.Namespace) -> int:
    # The engine alone: a rotation reads and writes sealed columns, it needs no registry or service.
    settings = Settings.from_environ()
    box = settings.secret_box

    async def run() -> list[ColumnReport]:
        engine = create_engine(settings.database_url)
        try:
            return await rotate_secrets(engine, box, batch_size=args.batch_size)
        finally:
            await engine.dispose()

    reports = in_event_loop(run)
    if args.json:
        # Rows named by primary key, as in the table: never a value.
        print_json(
            [
                {
                    "table": report.table,
                    "column": report.column,
                    "resealed": report.resealed,
                    "current": report.current,
                    "key_id": box.key_id,
                    "unreadable": report.unreadable,
                    "unsettled": report.unsettled,
                    "ok": report.ok,
                }
                for report in reports
            ]
        )
    for report in reports:
        if not args.json:
            print(
                f"{report.table}.{report.column}: {report.resealed} re-sealed, "
                f"{report.current} already under key {box.key_id}"
            )
        # Rows are named by their primary key only: never a value, sealed or not.
        for row in report.unreadable:
            print(f"gateway: {row}: {report.column} opens under no key given", file=sys.stderr)
        for row in report.unsettled:
            print(f"gateway: {row}: {report.column} kept changing; run again", file=sys.stderr)
    if any(report.unreadable for report in reports):
        print(
            "gateway: values that open under no key are left as they are: give the key that sealed them "
            "in GATEWAY_PREVIOUS_SECRET_KEYS and run again",
            file=sys.stderr,
        )
    return 0 if all(report.ok for report in reports) else 1


def _new_client_key(_: argparse.Namespace) -> int:
    key = "gwk_" + secrets.token_urlsafe(32)
    print(f"client key (give it to the app, store it nowhere else): {key}")
    print(
        f"key_sha256 (paste into the registry):                   {hashlib.sha256(key.encode()).hexdigest()}"
    )
    return 0


def _new_webhook_secret(_: argparse.Namespace) -> int:
    # 32 bytes: within the 24 to 64 the Standard Webhooks spec asks of a secret.
    secret = WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    print(secret)
    print(
        "put it in the environment variable the subscription's secret names (${VAR}) and give the same "
        "value to the app's owner: Standard Webhooks libraries verify with it as it is",
        file=sys.stderr,
    )
    return 0
