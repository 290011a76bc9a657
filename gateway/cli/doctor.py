"""``gateway doctor``: one line per check (ok / warn / FAIL and what to fix), or ``--json``; exit 1 when
a check fails."""

from __future__ import annotations

import argparse

import msgspec

from gateway.cli.shared import Commands, add_config_flag, add_json_flag, in_event_loop, print_json
from gateway.errors import ConfigError
from gateway.observability.doctor import Finding, examine
from gateway.registry.model import Registry, load_registry
from gateway.settings import Settings

__all__ = ["add_commands"]

EXIT_FAILED = 1


class Report(msgspec.Struct, frozen=True):
    """``--json``: ``ok`` when no check failed."""

    ok: bool
    checks: list[Finding]


def add_commands(commands: Commands) -> None:
    """``doctor``."""
    doctor = commands.add_parser(
        "doctor",
        help="check the database, secret key, tickets, tokens, clock, Redis and settings a replica runs "
        "on; exit 1 if any check fails",
    )
    add_config_flag(doctor)
    add_json_flag(doctor, "the checks as one JSON document")
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    settings = Settings.from_environ(config_path=args.config)
    registry: Registry | None = None
    problem = None
    try:
        registry = load_registry(settings.config_path)
    except ConfigError as exc:
        problem = str(exc)
    findings = in_event_loop(lambda: examine(settings, registry, problem))
    failed = any(finding.verdict == "fail" for finding in findings)
    if args.json:
        print_json(Report(not failed, findings))
    else:
        width = max(len(finding.check) for finding in findings)
        for finding in findings:
            verdict = "FAIL" if finding.verdict == "fail" else finding.verdict
            fix = f" — {finding.fix}" if finding.fix and finding.verdict != "ok" else ""
            print(f"{verdict:<4}  {finding.check:<{width}}  {finding.detail}{fix}")
    return EXIT_FAILED if failed else 0
