"""``gateway open-binding``: open accounts by WeChat's principal rules (SPEC §11), as tables or JSON."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TextIO

from gateway.binding.service import PassResult, PassRow
from gateway.catalog.service import csv_line
from gateway.cli.shared import (
    Commands,
    add_config_flag,
    add_json_flag,
    print_json,
    print_table,
    with_services,
)
from gateway.container import Services
from gateway.store.authorizations import AuthorizationStore

__all__ = ["add_commands", "print_binding_pass", "print_console_list"]

ATTENTION_FREE = frozenset({"bound", "newly_bound", "created"})  # results that need nobody
UNKNOWN_TARGET = "unknown (run `gateway open-binding check`)"
CONSOLE_COLUMNS = ("authorizer_appid", "name", "principal_name", "target_open_appid")


def add_commands(commands: Commands) -> None:
    """``open-binding check | ensure | create | console-list | mark-verified``."""
    binding = commands.add_parser("open-binding", help="open accounts by WeChat's principal rules (SPEC §11)")
    binding_commands = binding.add_subparsers(dest="binding_command", required=True, metavar="ACTION")
    check_binding = binding_commands.add_parser(
        "check", help="where every authorizer is bound and what ensure would do (recorded for the catalog)"
    )
    check_binding.set_defaults(run=_check)
    ensure = binding_commands.add_parser(
        "ensure", help="bind (or create then bind) every authorizer WeChat's API can bind to its target"
    )
    ensure.add_argument(
        "--dry-run", action="store_true", help="print the plan per account and change nothing"
    )
    ensure.set_defaults(run=_ensure)
    create = binding_commands.add_parser("create", help="create an open account from one authorizer")
    create.add_argument("--from", dest="source", required=True, metavar="APPID")
    create.add_argument(
        "--force",
        action="store_true",
        help="create even when the binding rules already give the account's principal an open account",
    )
    create.set_defaults(run=_create)
    console_list = binding_commands.add_parser(
        "console-list", help="accounts only the Open Platform console can bind, with the target to use"
    )
    console_format = console_list.add_mutually_exclusive_group()
    console_format.add_argument("--csv", action="store_true", help="CSV instead of a table")
    add_json_flag(console_format)
    console_list.set_defaults(run=_console_list)
    verified = binding_commands.add_parser(
        "mark-verified",
        help="record that an open account the gateway created was verified (认证): its cap is lifted",
    )
    verified.add_argument("open_appid", metavar="OPEN_APPID")
    verified.set_defaults(run=_mark_verified)
    for sub in (check_binding, ensure):
        add_json_flag(sub, 'one JSON object: "dry_run", "accounts" (a list) and "summary"')
    for sub in (check_binding, ensure, create, console_list, verified):
        add_config_flag(sub)


def _check(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        result = await services.binding.run_pass(actor="cli", dry_run=True, record=True)
        return print_binding_pass(result, as_json=args.json)

    return 1 if with_services(args, run) else 0


def _ensure(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        result = await services.binding.run_pass(actor="cli", dry_run=args.dry_run, record=not args.dry_run)
        return print_binding_pass(result, as_json=args.json)

    return 1 if with_services(args, run) else 0


def _mark_verified(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        if not await services.binding.mark_verified(args.open_appid, actor="cli"):
            print(f"{args.open_appid}: not an open account the gateway created", file=sys.stderr)
            return 1
        print(f"{args.open_appid}: verified; the API may bind more than 5 accounts to it")
        return 0

    return with_services(args, run)


def _console_list(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        await print_console_list(services.store.authorizations, as_csv=args.csv, as_json=args.json)
        return 0

    return with_services(args, run)


def _create(args: argparse.Namespace) -> int:
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

    return with_services(args, run)


def print_binding_pass(result: PassResult, out: TextIO = sys.stdout, *, as_json: bool = False) -> int:
    """A pass of ``gateway open-binding`` as a table per account (or JSON), a summary by result, and the
    accounts that need someone; returns how many do."""
    counts = Counter(row.result for row in result.rows)
    attention = [row for row in result.rows if row.result not in ATTENTION_FREE]
    if as_json:
        document = {
            "dry_run": result.dry_run,
            "accounts": [_pass_entry(row) for row in result.rows],
            "summary": dict(sorted(counts.items())),
        }
        print_json(document, out)
        return len(attention)
    header = ("appid", "principal", "bound to", "action", "target", "result")
    print_table(header, [_pass_cells(row) for row in result.rows], out)
    out.write(f"\n{'result':<32} {'accounts':>8}\n")
    for state, count in sorted(counts.items()):
        out.write(f"{state:<32} {count:>8}\n")
    out.write(f"{'total':<32} {len(result.rows):>8}\n")
    if result.dry_run and any(row.step is not None and row.step.action != "nothing" for row in result.rows):
        out.write("\n(a plan: nothing was changed; `gateway open-binding ensure` carries it out)\n")
    if attention:
        out.write("\nneeds attention:\n")
        for row in attention:
            out.write(f"  {row.appid}  {row.result}  {row.words}\n")
    return len(attention)


def _pass_cells(row: PassRow) -> tuple[str, ...]:
    step = row.step
    if step is None:
        return (row.appid, "", "", "", "", row.result)
    target = step.target or (f"(made by {step.creator})" if step.creator else "")
    principal = step.principal or "?"
    if len(principal) > 40:
        principal = principal[:39] + "…"
    return (row.appid, principal, step.current or "-", step.action, target, row.result)


def _pass_entry(row: PassRow) -> dict[str, object]:
    step = row.step
    return {
        "appid": row.appid,
        "principal_name": None if step is None else step.principal,
        "open_appid": None if step is None else step.current,
        "action": None if step is None else step.action,
        "target": None if step is None else step.target,
        "created_by": None if step is None else step.creator,
        "state": None if step is None else step.state,
        "result": row.result,
        "reason": None if step is None else step.reason,
        "words": row.words,
    }


async def print_console_list(
    records: AuthorizationStore, out: TextIO = sys.stdout, *, as_csv: bool = False, as_json: bool = False
) -> int:
    """The accounts only the Open Platform console can bind (SPEC §11), with the open account to bind
    each to, as the last check, ensure or catalog sync recorded them; returns how many. In JSON an
    unknown target is null."""
    facts = await records.binding_facts("console_binding_needed")
    if as_json:
        targets = [(f.authorizer_appid, f.nick_name, f.principal_name, f.target) for f in facts]
        print_json([dict(zip(CONSOLE_COLUMNS, row, strict=True)) for row in targets], out)
        return len(facts)
    # No target recorded: said so, never guessed here (the binding rules decide it in one place).
    rows = [(f.authorizer_appid, f.nick_name, f.principal_name, f.target or UNKNOWN_TARGET) for f in facts]
    if as_csv:
        out.write(csv_line(CONSOLE_COLUMNS).decode())
        for row in rows:
            out.write(csv_line(row).decode())
        return len(rows)
    if not rows:
        out.write("no account needs the Open Platform console\n")
        return 0
    print_table(CONSOLE_COLUMNS, rows, out)
    out.write(
        f"\n{len(rows)} account(s): bind each in the Open Platform console (管理中心 → 绑定) to its "
        "target; WeChat's API binds only accounts of the open account's own principal\n"
    )
    return len(rows)
