"""The ``gateway`` command line (SPEC §8)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from gateway.catalog.sync import DEFAULT_CONCURRENCY
from gateway.cli.demo import run_demo
from gateway.cli.operations import (
    print_binding_pass,
    print_console_list,
    print_sync_summary,
    progress_bars,
    services_of,
)
from gateway.errors import ConfigError, DeliveryUnknown, Refused
from gateway.http.app import Services, create_app
from gateway.http.deliveries import DeliveriesPage
from gateway.http.serving import Listener, run_event_loop, serve
from gateway.observability.logs import configure_logging
from gateway.onboarding.invites import DEFAULT_INVITE_VALID_S, MAX_INVITE_VALID_S
from gateway.onboarding.service import LinkRequest
from gateway.registry.model import load_registry
from gateway.settings import DEFAULT_CONFIG, DEFAULT_DATABASE_URL, Settings
from gateway.simulator import SimComponent, SimulatorConfig, create_simulator_app
from gateway.store import create_engine, upgrade
from gateway.store.deliveries import DELIVERY_STATUSES, DeliveryRecord, is_record_id
from gateway.store.rotation import DEFAULT_BATCH as ROTATION_BATCH
from gateway.store.rotation import ColumnReport, rotate_secrets

__all__ = ["main"]

EXIT_INVALID = 2
DEMO_CONFIG = "config/registry.example.yaml"
DELIVERIES_LISTED = 50


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args = _parser().parse_args(argv)
    try:
        _configure_logging(args.command)
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Group Gateway for WeChat components")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--pid-file", help="write the process id here for `gateway reload` (default $GATEWAY_PID_FILE)"
    )
    serve.set_defaults(run=_serve)

    reload = commands.add_parser(
        "reload", help="make a running `gateway serve` re-read its registry (sends it SIGHUP)"
    )
    target = reload.add_mutually_exclusive_group()
    target.add_argument("--pid", type=_positive_int, help="the process id of the instance")
    target.add_argument("--pid-file", help="where the instance wrote its id (default $GATEWAY_PID_FILE)")
    reload.set_defaults(run=_reload)

    demo = commands.add_parser("demo", help="run the gateway beside the WeChat simulator, with demo data")
    demo.add_argument("--config", default=DEMO_CONFIG)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--simulator-port", type=int, default=8001)
    demo.set_defaults(run=_demo)

    check = commands.add_parser("check-config", help="validate a registry file (exit 0 valid, 2 not)")
    check.add_argument("file")
    check.set_defaults(run=_check_config)

    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    database_commands.add_parser("upgrade", help="apply migrations to $GATEWAY_DATABASE_URL").set_defaults(
        run=_db_upgrade
    )

    binding = commands.add_parser("open-binding", help="open accounts by WeChat's principal rules (SPEC §11)")
    binding_commands = binding.add_subparsers(dest="binding_command", required=True, metavar="ACTION")
    check_binding = binding_commands.add_parser(
        "check", help="where every authorizer is bound and what ensure would do (recorded for the catalog)"
    )
    check_binding.set_defaults(run=_binding_check)
    ensure = binding_commands.add_parser(
        "ensure", help="bind (or create then bind) every authorizer WeChat's API can bind to its target"
    )
    ensure.add_argument(
        "--dry-run", action="store_true", help="print the plan per account and change nothing"
    )
    ensure.set_defaults(run=_binding_ensure)
    create = binding_commands.add_parser("create", help="create an open account from one authorizer")
    create.add_argument("--from", dest="source", required=True, metavar="APPID")
    create.add_argument(
        "--force",
        action="store_true",
        help="create even when the binding rules already give the account's principal an open account",
    )
    create.set_defaults(run=_binding_create)
    console_list = binding_commands.add_parser(
        "console-list", help="accounts only the Open Platform console can bind, with the target to use"
    )
    console_list.add_argument("--csv", action="store_true", help="CSV instead of a table")
    console_list.set_defaults(run=_binding_console_list)
    verified = binding_commands.add_parser(
        "mark-verified",
        help="record that an open account the gateway created was verified (认证): its cap is lifted",
    )
    verified.add_argument("open_appid", metavar="OPEN_APPID")
    verified.set_defaults(run=_binding_mark_verified)
    for sub in (check_binding, ensure):
        sub.add_argument("--json", action="store_true", help="JSON instead of a table")
    for sub in (check_binding, ensure, create, console_list, verified):
        sub.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")

    catalog = commands.add_parser("catalog", help="the catalog of every authorizer across every component")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    sync = catalog_commands.add_parser(
        "sync", help="bring the catalog up to date from WeChat (exit 0 with no failures, 1 with some)"
    )
    sync.add_argument("--platform", metavar="ID", help="only this platform (default: every one)")
    sync.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"WeChat calls at a time (default {DEFAULT_CONCURRENCY})",
    )
    sync.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    sync.set_defaults(run=_catalog_sync)

    onboarding = commands.add_parser("onboarding", help="bring accounts to the group's platforms")
    onboarding_commands = onboarding.add_subparsers(
        dest="onboarding_command", required=True, metavar="ACTION"
    )
    invite = onboarding_commands.add_parser(
        "invite", help="print a signed invite to a platform's authorization start page, for an administrator"
    )
    invite.add_argument("--platform", required=True, metavar="ID", help="the platform to authorize")
    invite.add_argument(
        "--auth-type",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="1 official accounts, 2 mini programs, 3 both (default 3)",
    )
    invite.add_argument("--biz-appid", metavar="APPID", help="only this account may authorize")
    invite.add_argument(
        "--valid-days",
        type=_invite_days,
        default=DEFAULT_INVITE_VALID_S // 86400,
        metavar="D",
        help=f"days the invite opens the page (default {DEFAULT_INVITE_VALID_S // 86400}, "
        f"at most {MAX_INVITE_VALID_S // 86400})",
    )
    invite.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")
    invite.set_defaults(run=_onboarding_invite)

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
        type=_positive_int,
        default=DELIVERIES_LISTED,
        metavar="N",
        help=f"at most N (default {DELIVERIES_LISTED})",
    )
    listing.add_argument(
        "--before", type=_record_id, metavar="ID", help="only those older than this one (the next page)"
    )
    listing.add_argument("--json", action="store_true", help="print the JSON of GET /v1/deliveries")
    listing.set_defaults(run=_deliveries_list)
    replay = deliveries_commands.add_parser(
        "replay", help="make deliveries due now, whatever their state (exit 1 if an id is unknown)"
    )
    replay.add_argument("ids", nargs="+", metavar="ID")
    replay.set_defaults(run=_deliveries_replay)
    for sub in (listing, replay):
        sub.add_argument("--config", help=f"the registry (default $GATEWAY_CONFIG or {DEFAULT_CONFIG})")

    rotate = commands.add_parser(
        "rotate-secret-key",
        help="re-seal every secret at rest under $GATEWAY_SECRET_KEY, opening with it or "
        "$GATEWAY_PREVIOUS_SECRET_KEYS (exit 1 if a value opens under neither)",
    )
    rotate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=ROTATION_BATCH,
        metavar="N",
        help=f"rows per transaction (default {ROTATION_BATCH})",
    )
    rotate.set_defaults(run=_rotate_secret_key)

    key = commands.add_parser("new-client-key", help="print a new client key and its key_sha256")
    key.set_defaults(run=_new_client_key)

    simulate = commands.add_parser("simulate", help="run the WeChat simulator on its own")
    simulate.add_argument("--config", help="push tickets to the platforms of this registry")
    simulate.add_argument("--gateway-url", default="http://127.0.0.1:8000", help="where the gateway listens")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.add_argument(
        "--ticket-interval", type=float, default=600.0, help="seconds between ticket pushes"
    )
    simulate.set_defaults(run=_simulate)
    return parser


def _configure_logging(command: str) -> None:
    # JSON lines for `serve`, which runs under a log collector; readable lines for everything run at a
    # terminal (the demo, the one-off commands).
    default_format = "json" if command == "serve" else "text"
    configure_logging(
        os.environ.get("GATEWAY_LOG_LEVEL", "") or "INFO",
        os.environ.get("GATEWAY_LOG_FORMAT", "") or default_format,
    )


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(config_path=args.config, pid_file=args.pid_file)
    # Until the app takes SIGHUP as "reload", its default action would end the process: a reload sent to
    # an instance still starting is ignored instead.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    registry = load_registry(settings.config_path)
    run_event_loop(serve([Listener(create_app(settings, registry), args.host, args.port)]))
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Signal the instance; it validates the file itself and logs the outcome (the signal carries none
    back), so the file is not checked here: this process may not even see the same one."""
    pid = args.pid
    if pid is None:
        pid_file = args.pid_file or os.environ.get("GATEWAY_PID_FILE")
        if not pid_file:
            raise ConfigError("name the instance to reload: --pid, --pid-file or $GATEWAY_PID_FILE")
        try:
            pid = int(Path(pid_file).read_text(encoding="ascii"))
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else "not a process id"
            raise ConfigError(f"{pid_file}: cannot read a process id: {detail}") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"gateway: no process {pid} (is the instance running?)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"gateway: not allowed to signal process {pid}", file=sys.stderr)
        return 1
    print(
        f"asked process {pid} to reload its registry; its log says 'registry reloaded' with the changes, "
        "or 'registry reload refused' with the fault"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:

    run_event_loop(run_demo(Path(args.config), args.host, args.port, args.simulator_port))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    registry = load_registry(args.file)
    print(
        f"{args.file}: valid: {len(registry.platforms)} platforms, {len(registry.clients)} clients, "
        f"{len(registry.pins)} pins"
    )
    return 0


def _db_upgrade(_: argparse.Namespace) -> int:

    async def run() -> None:
        engine = create_engine(os.environ.get("GATEWAY_DATABASE_URL", DEFAULT_DATABASE_URL))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run_event_loop(run())
    print("database schema is up to date")
    return 0


def _binding_check(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        result = await services.binding.run_pass(actor="cli", dry_run=True, record=True)
        return print_binding_pass(result, as_json=args.json)

    return 1 if _with_services(args, run) else 0


def _binding_ensure(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        result = await services.binding.run_pass(actor="cli", dry_run=args.dry_run, record=not args.dry_run)
        return print_binding_pass(result, as_json=args.json)

    return 1 if _with_services(args, run) else 0


def _binding_mark_verified(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        if not await services.binding.mark_verified(args.open_appid, actor="cli"):
            print(f"{args.open_appid}: not an open account the gateway created", file=sys.stderr)
            return 1
        print(f"{args.open_appid}: verified; the API may bind more than 5 accounts to it")
        return 0

    return _with_services(args, run)


def _binding_console_list(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        await print_console_list(services, as_csv=args.csv)
        return 0

    return _with_services(args, run)


def _binding_create(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        open_appid, step = await services.binding.create_from(args.source, actor="cli", force=args.force)
        print(
            f"created open account {open_appid}; it is unverified and takes at most 5 accounts through "
            "the API until verified: name it in the registry (group.open_appid, or an entry of "
            "group.binding.open_accounts)"
        )
        if step.state != "bound":
            print(f"{args.source} is {step.state}: {step.words}")
        return 0

    return _with_services(args, run)


def _catalog_sync(args: argparse.Namespace) -> int:
    # One line per WeChat call and per token would bury the progress bar and the summary.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for chatty in ("gateway.wechat.client", "gateway.credentials.tokens"):
            logging.getLogger(chatty).setLevel(logging.WARNING)

    async def run(services: Services) -> int:
        summary = await services.catalog_sync.run(
            args.platform, concurrency=args.concurrency, track=progress_bars
        )
        print_sync_summary(summary)
        return 1 if summary.failures else 0

    return _with_services(args, run)


def _onboarding_invite(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        request = LinkRequest(
            auth_type=args.auth_type, biz_appid=args.biz_appid, invite_valid_s=args.valid_days * 86400
        )
        try:
            invite = services.onboarding.create_invite("cli", args.platform, request)
        finally:
            await services.audit.flush()  # the invite is in the audit log before its URL is shown
        expires = datetime.fromtimestamp(invite.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(invite.url)
        print(f"valid until {expires}; send it to the account's administrator", file=sys.stderr)
        return 0

    return _with_services(args, run)


def _invite_days(text: str) -> int:
    days = _positive_int(text)
    if days * 86400 > MAX_INVITE_VALID_S:
        raise argparse.ArgumentTypeError(f"at most {MAX_INVITE_VALID_S // 86400} days")
    return days


def _deliveries_list(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        items, more = await services.store.deliveries.page(
            status=args.status, client_id=args.client, before=args.before, limit=args.limit
        )
        next_cursor = items[-1].id if more and items else None
        if args.json:
            print(msgspec.json.encode(DeliveriesPage(items, next_cursor)).decode())
            return 0
        _print_deliveries(items)
        if next_cursor is not None:
            print(f"more follow: add --before {next_cursor}", file=sys.stderr)
        return 0

    return _with_services(args, run)


def _deliveries_replay(args: argparse.Namespace) -> int:
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
        if replayed:
            _print_deliveries(replayed)
            print(
                f"{len(replayed)} replayed: due now; a running `gateway serve` delivers them at its next poll"
            )
        return 1 if unknown else 0

    return _with_services(args, run)


_DELIVERY_COLUMNS = (
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


def _print_deliveries(records: Sequence[DeliveryRecord]) -> None:
    """``records`` as a table on stdout, columns as wide as their widest cell."""
    if not records:
        print("no deliveries")
        return
    rows = [_DELIVERY_COLUMNS, *(_delivery_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_DELIVERY_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _with_services(args: argparse.Namespace, run: Callable[[Services], Awaitable[int]]) -> int:
    settings = Settings.from_environ(config_path=args.config)
    registry = load_registry(settings.config_path)

    async def main() -> int:
        async with services_of(settings, registry) as services:
            try:
                return await run(services)
            except Refused as exc:
                print(f"gateway: {exc.message}", file=sys.stderr)
                return 1

    return run_event_loop(main())


def _rotate_secret_key(args: argparse.Namespace) -> int:
    settings = Settings.from_environ()
    box = settings.secret_box

    async def run() -> list[ColumnReport]:
        engine = create_engine(settings.database_url)
        try:
            return await rotate_secrets(engine, box, batch_size=args.batch_size)
        finally:
            await engine.dispose()

    reports = run_event_loop(run())
    for report in reports:
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


def _simulate(args: argparse.Namespace) -> int:

    components = []
    if args.config:
        registry = load_registry(args.config)
        gateway_url = args.gateway_url.rstrip("/")
        components = [
            SimComponent(
                appid=p.component_appid,
                secret=p.component_appsecret.reveal(),
                token=p.token.reveal(),
                encoding_aes_key=p.encoding_aes_key.reveal(),
                event_url=f"{gateway_url}/wechat/{p.id}/events",
                message_url=f"{gateway_url}/wechat/{p.id}/messages/$APPID$",
                auth_domain=urlsplit(gateway_url).netloc,  # 授权发起页域名: where the start page is
            )
            for p in registry.platforms
        ]
    app = create_simulator_app(SimulatorConfig(components=components, ticket_interval_s=args.ticket_interval))
    print(f"WeChat simulator on http://{args.host}:{args.port} (control API under /sim)", flush=True)
    run_event_loop(serve([Listener(app, args.host, args.port)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
