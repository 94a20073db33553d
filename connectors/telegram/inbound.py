"""Telegram messages as the core's :class:`~bot.conversation.IncomingMessage`.

:func:`to_incoming` decides who a message is for and what the model reads:

- a private chat is always addressed to the bot (``is_direct``; the conversation is per user);
- in a group or supergroup a message is addressed when it mentions the bot (``@botname``, or a
  text mention of the bot's user) or replies to one of the bot's messages;
- a forum topic (``message_thread_id`` on a topic message) is a thread: one shared conversation;
- the bot's own ``@botname`` is removed from the text the model reads;
- a reply brings the replied-to message along as a :class:`~bot.conversation.Quote` (only the
  part the user quoted, when they picked one), the bot's own messages included;
- a document or photo comes as an :class:`~bot.conversation.Attachment` (:func:`files_of` lists
  them; the connector gives each its download), its caption being the text.

A message that starts with a command never gets here: the connector decides whether it is one of
this bot's commands (:mod:`connectors.telegram.commands`) and builds a request with
:func:`to_command_request`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telegram import Chat, Message, MessageEntity, User

from bot.conversation import Attachment, CommandRequest, Destination, IncomingMessage, Quote
from bot.text import cut_spans

PLATFORM = "telegram"


def is_private(chat: Chat) -> bool:
    """A one-to-one chat with the bot (the conversation is per user)."""
    return chat.type == Chat.PRIVATE


def _is_topic_root(message: Message, reply: Message) -> bool:
    # In a forum every topic message "replies" to the topic's service message; that is not a
    # reply to the bot even when the bot created the topic.
    return reply.forum_topic_created is not None or (
        message.is_topic_message is True and reply.message_id == message.message_thread_id
    )


def _utf16(text: str) -> bytes:
    # surrogatepass: a lone surrogate (JSON can carry one) is one UTF-16 unit, as Telegram counts it.
    return text.encode("utf-16-le", "surrogatepass")


def _index(text: str, utf16_offset: int) -> int:
    """The Python string index of a UTF-16 offset (Telegram counts entities in UTF-16)."""
    return len(_utf16(text)[: 2 * max(0, utf16_offset)].decode("utf-16-le", "surrogatepass"))


def _entities(message: Message) -> list[tuple[MessageEntity, int, str]]:
    """Each entity of the text (or caption) with its start (a Python index) and its text.

    Unlike PTB's ``parse_entities`` this takes any text: lone surrogates, and offsets or lengths
    past the end (an entity there covers what is left, or nothing).
    """
    text = message.text or message.caption or ""
    units = _utf16(text)
    found = []
    for entity in message.entities if message.text is not None else message.caption_entities:
        start, end = max(0, entity.offset), max(0, entity.offset + entity.length)
        value = units[2 * start : 2 * end].decode("utf-16-le", "surrogatepass")
        found.append((entity, _index(text, start), value))
    return found


@dataclass(frozen=True, slots=True)
class TelegramFile:
    """A file of a message as the Bot API lists it: ``file_id`` is what ``getFile`` takes."""

    file_id: str
    name: str
    mime: str
    size: int | None


def files_of(message: Message, max_bytes: int) -> list[TelegramFile]:
    """The message's document, video, audio or voice note (these last are listed, never read), or its
    photo: the largest size Telegram made that fits ``max_bytes``
    (the smallest if none declares a size that fits, which the download limit then refuses)."""
    found = []
    document = message.document
    if document is not None:
        name = document.file_name or f"file-{document.file_unique_id}"
        found.append(TelegramFile(document.file_id, name, document.mime_type or "", document.file_size))
    for media, fallback in (
        (message.video, "video.mp4"),
        (message.animation, "animation.mp4"),
        (message.audio, "audio.mp3"),
        (message.voice, "voice.ogg"),
        (message.video_note, "video_note.mp4"),
    ):
        if media is not None:  # listed so the user hears they are not read; never downloaded
            name = getattr(media, "file_name", None) or fallback
            mime = getattr(media, "mime_type", None) or "application/octet-stream"
            found.append(TelegramFile(media.file_id, name, mime, media.file_size))
    if message.photo:
        sizes = sorted(message.photo, key=lambda p: p.width * p.height)
        fitting = [p for p in sizes if p.file_size is not None and p.file_size <= max_bytes]
        photo = fitting[-1] if fitting else sizes[0]
        found.append(TelegramFile(photo.file_id, "photo.jpg", "image/jpeg", photo.file_size))
    return found


def to_incoming(
    message: Message, bot_id: int, bot_username: str, attachments: Sequence[Attachment] = ()
) -> IncomingMessage | None:
    """Map a text message, or a file with its caption; ``None`` for what the bot never answers (no
    text and no file, no sender, itself)."""
    text = message.text if message.text is not None else message.caption
    sender = message.from_user
    if text is None and attachments:
        text = ""
    if text is None or sender is None or sender.id == bot_id:
        return None
    is_direct = is_private(message.chat)
    handle = f"@{bot_username}".lower()
    addressed = is_direct
    cuts: list[tuple[int, int]] = []  # spans of the bot's handle, in Python string indices
    for entity, start, value in _entities(message):
        if entity.type == MessageEntity.MENTION and value.lower() == handle:
            addressed = True
            cuts.append((start, start + len(value)))
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            addressed = True
    reply = message.reply_to_message
    if (
        reply is not None
        and reply.from_user is not None
        and reply.from_user.id == bot_id
        and not _is_topic_root(message, reply)
    ):
        addressed = True
    stripped = cut_spans(text, cuts)
    quote = _quote(message, reply) if reply is not None and not _is_topic_root(message, reply) else None
    return IncomingMessage(
        platform=PLATFORM,
        channel=str(message.chat.id),
        user=str(sender.id),
        message_id=str(message.message_id),
        text=stripped or text,
        thread=_thread(message),
        is_direct=is_direct,
        addressed=addressed,
        user_name=_user_name(sender),
        quote=quote,
        attachments=tuple(attachments),
    )


def _quote(message: Message, reply: Message) -> Quote | None:
    text = message.quote.text if message.quote is not None else reply.text or reply.caption
    if not text:
        return None
    author = ""
    if reply.from_user is not None:
        author = _user_name(reply.from_user)
    elif reply.sender_chat is not None:  # an anonymous admin or a channel posts as a chat
        author = reply.sender_chat.title or ""
    return Quote(author, text)


def _thread(message: Message) -> str | None:
    return str(message.message_thread_id) if message.is_topic_message and message.message_thread_id else None


def _user_name(sender: User) -> str:
    return sender.full_name or sender.username or str(sender.id)


def sent_by_chat_admin(message: Message) -> bool:
    """An anonymous group admin posts as the group itself."""
    return message.sender_chat is not None and message.sender_chat.id == message.chat.id


def to_command_request(message: Message, name: str, args: str, *, is_admin: bool) -> CommandRequest | None:
    """The request for command ``name`` (a core name) sent as ``message``; ``None`` without a sender."""
    sender = message.from_user
    if sender is None:
        return None
    is_direct = is_private(message.chat)
    thread = _thread(message)
    return CommandRequest(
        platform=PLATFORM,
        channel=str(message.chat.id),
        user=str(sender.id),
        name=name,
        args=args,
        message_id=str(message.message_id),
        thread=thread,
        is_direct=is_direct,
        user_name=_user_name(sender),
        is_admin=is_admin and not is_direct,
        destination=Destination(
            channel=str(message.chat.id),
            thread=thread,
            reply_to=str(message.message_id),
            is_group=not is_direct,
        ),
    )
