"""``gateway serve`` and ``gateway reload``: the gateway running, and its registry re-read."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import msgspec

from gateway.cli.shared import Commands, add_config_flag, in_event_loop, positive_int
from gateway.errors import ConfigError
from gateway.http.app import create_admin_app, create_app
from gateway.http.serving import Listener, serve
from gateway.observability.tracing import configure_tracing
from gateway.registry.model import load_registry_digest
from gateway.settings import Settings

__all__ = ["add_commands"]


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
    # Until the app takes SIGHUP as "reload", its default action would end the process: a reload sent to
    # an instance still starting is ignored instead.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.admin_port is not None:
        settings = msgspec.structs.replace(settings, admin_port=args.admin_port)
    registry, sha256 = load_registry_digest(settings.config_path)
    tracing = configure_tracing() if settings.otel else None
    try:
        app = create_app(settings, registry, registry_sha256=sha256)
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
