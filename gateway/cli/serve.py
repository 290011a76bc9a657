"""``gateway serve`` and ``gateway reload``: the gateway running, and its registry re-read."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import get_args

import msgspec

from gateway.cli.shared import Commands, add_config_flag, in_event_loop, positive_int
from gateway.errors import ConfigError
from gateway.http.app import create_admin_app, create_app
from gateway.http.serving import Listener, serve
from gateway.observability.preflight import unsafe_settings
from gateway.observability.tracing import configure_tracing
from gateway.registry.model import load_registry_digest
from gateway.settings import Settings, Unsafe
from gateway.store import create_engine
from gateway.store.migrate import SchemaStatus, schema_status

__all__ = ["add_commands"]

log = logging.getLogger(__name__)


def add_commands(commands: Commands) -> None:
    """``serve`` and ``reload``."""
    serving = commands.add_parser("serve", help="run the gateway")
    add_config_flag(serving)
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=8000)
    serving.add_argument(
        "--admin-port",
        type=_port,
        help="serve /metrics on this port only, not on --port (default $GATEWAY_ADMIN_PORT)",
    )
    serving.add_argument("--admin-host", help="the admin port's address (default: --host's)")
    serving.add_argument(
        "--pid-file", help="write the process id here for `gateway reload` (default $GATEWAY_PID_FILE)"
    )
    serving.add_argument(
        "--no-migrate",
        action="store_true",
        help="leave the schema as it is, as GATEWAY_MIGRATE=0 does: refuse to start on a database behind "
        "this release (`gateway db upgrade` brings it up), serve a newer one",
    )
    serving.add_argument(
        "--allow-unsafe",
        action="append",
        default=[],
        choices=get_args(Unsafe),
        metavar="NAME",
        help="start despite this refusal: example-keys (the example registry's public client keys), "
        "http-public-url (a plain-http GATEWAY_PUBLIC_URL others reach); repeatable, adds to "
        "$GATEWAY_ALLOW_UNSAFE",
    )
    serving.set_defaults(run=_serve)

    reload = commands.add_parser(
        "reload", help="make a running `gateway serve` re-read its registry (sends it SIGHUP)"
    )
    target = reload.add_mutually_exclusive_group()
    target.add_argument("--pid", type=positive_int, help="the process id of the instance")
    target.add_argument("--pid-file", help="where the instance wrote its id (default $GATEWAY_PID_FILE)")
    reload.set_defaults(run=_reload)


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(config_path=args.config, pid_file=args.pid_file)
    settings = msgspec.structs.replace(
        settings,
        migrate=settings.migrate and not args.no_migrate,
        allow_unsafe=settings.allow_unsafe | frozenset(args.allow_unsafe),
        admin_port=settings.admin_port if args.admin_port is None else args.admin_port,
    )
    # Until the app takes SIGHUP as "reload", its default action would end the process: a reload sent to
    # an instance still starting is ignored instead.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings.secret_box  # noqa: B018  # refused first: nothing runs without it
    registry, sha256 = load_registry_digest(settings.config_path)
    refusals = unsafe_settings(settings, registry)
    for refusal in refusals:
        print(f"gateway: {refusal}", file=sys.stderr)
    if refusals:
        return 2
    if not settings.migrate:
        _require_runnable_schema(in_event_loop(lambda: _schema_status(settings.database_url)))
    tracing = configure_tracing() if settings.otel else None
    try:
        app = create_app(settings, registry, migrate=settings.migrate, registry_sha256=sha256)
        listeners = [Listener(app, args.host, args.port)]
        if settings.admin_port is not None:
            admin = create_admin_app(app)
            listeners.append(Listener(admin, args.admin_host or args.host, settings.admin_port))
        in_event_loop(lambda: serve(listeners, http=settings.http_parser))
    finally:
        if tracing is not None:
            tracing.shutdown()  # the spans still batched are sent
    return 0


def _port(text: str) -> int:
    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return port


async def _schema_status(database_url: str) -> SchemaStatus:
    engine = create_engine(database_url)
    try:
        return await schema_status(engine)
    finally:
        await engine.dispose()


def _require_runnable_schema(status: SchemaStatus) -> None:
    """Without migrating, this release runs on its head and on anything newer (the previous release must
    run on the next schema: docs/operations.md, "Upgrades and rollbacks"), never on less."""
    if status.state in ("empty", "behind"):
        raise ConfigError(
            f"{status.describe()}, and serving without migrating (--no-migrate, GATEWAY_MIGRATE=0) "
            "leaves it so: run `gateway db upgrade` with this release first"
        )
    if status.state == "ahead":
        log.warning("%s; serving on it without migrating", status.describe())


def _reload(args: argparse.Namespace) -> int:
    """Signal the instance; it validates the file itself and logs the outcome (the signal carries none
    back), so the file is not checked here: this process may not even see the same one."""
    pid = args.pid
    if pid is None:
        pid_file = Settings.from_environ(pid_file=args.pid_file).pid_file
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
