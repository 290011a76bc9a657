"""WeChat-facing: the message-and-event URL of each platform (``/$APPID$`` filled in by WeChat)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.callbacks.messages import MessageService
from gateway.callbacks.pushes import MAX_PUSH_BYTES
from gateway.http.openapi import PUSH_ERRORS

__all__ = ["WeChatMessagesController"]


class WeChatMessagesController(Controller):
    """User messages and events, authenticated by WeChat's signature rather than a client key."""

    path = "/wechat"
    tags = ["wechat"]

    @post(
        "/{platform:str}/messages/{appid:str}",
        status_code=200,
        request_max_body_size=MAX_PUSH_BYTES,
        summary="Message-and-event URL of one platform",
        responses=PUSH_ERRORS,
    )
    async def messages(
        self,
        platform: FromPath[str],
        appid: FromPath[str],
        request: Request[Any, Any, Any],
        messages: NamedDependency[MessageService],
    ) -> Response[str]:
        """Verify and decrypt a user message; answer ``success``, a passive reply or an empty body."""
        answer = await messages.receive(platform, appid, request.query_params, await request.body())
        later = BackgroundTask(answer.later) if answer.later is not None else None
        return Response(answer.body, media_type=answer.media_type, background=later)
