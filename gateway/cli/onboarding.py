"""``gateway onboarding invite``: a signed invite to a platform's start page, for an administrator."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from gateway.cli.shared import (
    Commands,
    add_config_flag,
    add_json_flag,
    positive_int,
    print_json,
    with_services,
)
from gateway.container import Services
from gateway.onboarding.invites import DEFAULT_INVITE_VALID_S, MAX_INVITE_VALID_S
from gateway.onboarding.service import LinkRequest

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """``onboarding invite``."""
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
    add_json_flag(invite, 'one JSON object: "platform", "auth_type", "biz_appid", "url" and "expires_at"')
    add_config_flag(invite)
    invite.set_defaults(run=_invite)


def _invite(args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        request = LinkRequest(
            auth_type=args.auth_type, biz_appid=args.biz_appid, invite_valid_s=args.valid_days * 86400
        )
        try:
            invite = services.onboarding.create_invite("cli", args.platform, request)
        finally:
            await services.audit.flush()  # the invite is in the audit log before its URL is shown
        if args.json:
            print_json(
                {
                    "platform": args.platform,
                    "auth_type": args.auth_type,
                    "biz_appid": args.biz_appid,
                    "url": invite.url,
                    "expires_at": invite.expires_at,
                }
            )
            return 0
        expires = datetime.fromtimestamp(invite.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(invite.url)
        print(f"valid until {expires}; send it to the account's administrator", file=sys.stderr)
        return 0

    return with_services(args, run)


def _invite_days(text: str) -> int:
    days = positive_int(text)
    if days * 86400 > MAX_INVITE_VALID_S:
        raise argparse.ArgumentTypeError(f"at most {MAX_INVITE_VALID_S // 86400} days")
    return days
