"""A reply subscriber's answer (SPEC §10) and the passive reply XML WeChat expects for it.

The subscriber answers ``{"reply": {"msgtype": "text", "content": "…"}}``, or image, voice, video,
music or news with the fields of WeChat's passive replies in lower case (被动回复用户消息). An empty
body or ``{}`` is no reply; anything else that does not decode is refused with the reason.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.xml import XmlLeaf, XmlValue

__all__ = ["PassiveReply", "SubscriberAnswer", "parse_answer", "reply_fields"]

MAX_ARTICLES = 8


class _Reply(msgspec.Struct, frozen=True, tag_field="msgtype", forbid_unknown_fields=True):
    pass


class TextReply(_Reply, frozen=True, tag="text"):
    """A text message."""

    content: str


class ImageReply(_Reply, frozen=True, tag="image"):
    """An image uploaded as media."""

    media_id: str


class VoiceReply(_Reply, frozen=True, tag="voice"):
    """A voice clip uploaded as media."""

    media_id: str


class VideoReply(_Reply, frozen=True, tag="video"):
    """A video uploaded as media."""

    media_id: str
    title: str = ""
    description: str = ""


class MusicReply(_Reply, frozen=True, tag="music"):
    """A music card."""

    thumb_media_id: str
    title: str = ""
    description: str = ""
    musicurl: str = ""
    hqmusicurl: str = ""


class Article(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One article of a news reply."""

    title: str
    description: str = ""
    picurl: str = ""
    url: str = ""


class NewsReply(_Reply, frozen=True, tag="news"):
    """Articles (WeChat shows the first only, since 2018; up to eight are accepted)."""

    articles: Annotated[list[Article], msgspec.Meta(min_length=1, max_length=MAX_ARTICLES)]


PassiveReply = TextReply | ImageReply | VoiceReply | VideoReply | MusicReply | NewsReply


class SubscriberAnswer(msgspec.Struct, frozen=True):
    """The body a reply subscriber answers with (other keys are ignored)."""

    reply: PassiveReply | None = None


_decoder = msgspec.json.Decoder(SubscriberAnswer)


def parse_answer(body: bytes) -> PassiveReply | None:
    """The reply in a subscriber's answer; None for no reply. ValueError names what is wrong."""
    if not body.strip():
        return None
    try:
        return _decoder.decode(body).reply
    except msgspec.ValidationError as exc:
        raise ValueError(f"the answer is not a reply: {exc}") from None
    except msgspec.DecodeError:
        raise ValueError("the answer is not JSON") from None


def reply_fields(reply: PassiveReply) -> dict[str, XmlValue]:
    """The elements of the passive reply XML after the addressing (``MsgType`` onwards)."""
    match reply:
        case TextReply(content=content):
            return {"MsgType": "text", "Content": content}
        case ImageReply(media_id=media_id):
            return {"MsgType": "image", "Image": {"MediaId": media_id}}
        case VoiceReply(media_id=media_id):
            return {"MsgType": "voice", "Voice": {"MediaId": media_id}}
        case VideoReply():
            video: dict[str, XmlLeaf] = {
                "MediaId": reply.media_id,
                "Title": reply.title,
                "Description": reply.description,
            }
            return {"MsgType": "video", "Video": video}
        case MusicReply():
            music: dict[str, XmlLeaf] = {
                "Title": reply.title,
                "Description": reply.description,
                "MusicUrl": reply.musicurl,
                "HQMusicUrl": reply.hqmusicurl,
                "ThumbMediaId": reply.thumb_media_id,
            }
            return {"MsgType": "music", "Music": music}
        case NewsReply(articles=articles):
            items: list[dict[str, XmlLeaf]] = [
                {"Title": a.title, "Description": a.description, "PicUrl": a.picurl, "Url": a.url}
                for a in articles
            ]
            return {"MsgType": "news", "ArticleCount": len(items), "Articles": items}
