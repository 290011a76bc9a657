"""WeChat's release test (全网发布接入检测), answered by the gateway itself.

Before a component may be released to every account, WeChat authorizes it from dedicated test accounts
and checks how their messages are answered (D/Third-party_Platforms/2.0/operation/thirdparty/
releases_instructions.html). The rules apply to those accounts only, keyed by the appid in the message
URL:

    text TESTCOMPONENT_MSG_TYPE_TEXT     passive text reply TESTCOMPONENT_MSG_TYPE_TEXT_callback
    text QUERY_AUTH_CODE:<code>          an empty body within 5 s; then exchange <code> (api_query_auth)
                                         and send <code>_from_api to the user through message/custom/send
    any event                            passive text reply <Event>from_callback (e.g. LOCATIONfrom_callback)

Anything else from a test account is answered ``success``. The code is the one WeChat also pushes with the
test account's ``authorized`` event, so it is exchanged through the AuthorizationService, once: whichever
of the two arrives second finds it exchanged, and the reply uses the stored authorization's token.
"""

from __future__ import annotations

import logging
from functools import partial

from gateway.authorizations.service import AuthorizationService
from gateway.callbacks.messages import Reply
from gateway.credentials.tokens import TokenService
from gateway.errors import Refused, UpstreamError, UpstreamUnavailable
from gateway.xml import UserMessage

__all__ = ["RELEASE_TEST_APPIDS", "ReleaseTest"]

log = logging.getLogger(__name__)

# The five groups of test accounts, from which WeChat picks one at random for each test run.
RELEASE_TEST_APPIDS = frozenset(
    {
        # official accounts (gh_3c884a361561, gh_c0f28a78b318, gh_3f222ed8d140, gh_26128078e9ab,
        # gh_2b3713f184a6)
        "wx570bc396a51b8ff8",
        "wx9252c5e0bb1836fc",
        "wx8e1097c5bc82cde9",
        "wx14550af28c71a144",
        "wxa35b9c23cfe664eb",
        # mini programs (gh_8dad206e9538, gh_905ae9d01059, gh_393666f1fdf4, gh_39abb5d4e1b7,
        # gh_7818dcb60240)
        "wxd101a85aa106f53e",
        "wxc39235c15087f6f3",
        "wx7720d01d4b2a4500",
        "wx05d483572dcd5d8b",
        "wx5910277cae6fd970",
    }
)
TEXT_PROBE = "TESTCOMPONENT_MSG_TYPE_TEXT"
API_PROBE = "QUERY_AUTH_CODE:"


class ReleaseTest:
    """The MessageHandler that answers the release test's accounts; every other account gets no reply."""

    def __init__(self, authorizations: AuthorizationService, tokens: TokenService) -> None:
        self._authorizations = authorizations
        self._tokens = tokens

    async def handle(self, platform_id: str, authorizer_appid: str, message: UserMessage) -> Reply | None:
        """The test's expected answer to ``message``, or None when it expects none."""
        if authorizer_appid not in RELEASE_TEST_APPIDS:
            return None
        if message.msg_type == "event":
            return Reply.text(f"{message.event}from_callback")
        if message.msg_type != "text":
            return None
        if message.content == TEXT_PROBE:
            return Reply.text(f"{TEXT_PROBE}_callback")
        code = message.content.removeprefix(API_PROBE)
        if code == message.content or not code:
            return None
        return Reply.empty(partial(self._reply_through_api, platform_id, authorizer_appid, message, code))

    async def _reply_through_api(
        self, platform_id: str, authorizer_appid: str, message: UserMessage, code: str
    ) -> None:
        try:
            await self._authorizations.exchange_code(platform_id, code, actor="wechat")
            authorizer = await self._tokens.authorizer_client(platform_id, authorizer_appid)
            await authorizer.send_custom_text(message.from_user_name, f"{code}_from_api")
        except (UpstreamError, UpstreamUnavailable, Refused) as exc:
            log.warning("release test of %s on %s: no API reply: %s", authorizer_appid, platform_id, exc)
            return
        except Exception:  # WeChat has its answer already: a failure here is only logged
            log.exception("release test of %s on %s: no API reply", authorizer_appid, platform_id)
            return
        log.info("release test of %s on %s: API reply sent", authorizer_appid, platform_id)
