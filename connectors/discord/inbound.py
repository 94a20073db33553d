"""Turning a discord.py ``Message`` into the core's :class:`~bot.conversation.IncomingMessage`.

Which messages are for the bot (``addressed``):

- every message in a DM;
- in a guild channel, a message that mentions the bot or replies to one of its messages;
- in a thread, any message once the bot takes part in it: it created the thread, it is a member
  of it, or it was addressed there before (remembered in :class:`Participation`).

Threads map to ``channel`` = the parent channel id and ``thread`` = the thread id, so a thread is
one shared conversation that inherits its parent channel's settings (scope, system prompt); the
connector posts replies into the thread itself. Messages from bots (this one included) are
dropped; other messages are delivered unaddressed so that plugins can see them. A reply carries
the message it answers (author and text) as a :class:`~bot.conversation.Quote`.

A slash command (an APPLICATION_COMMAND interaction) becomes a :class:`~bot.conversation.CommandRequest`
with the same channel and thread mapping, the options' typed values as ``args`` and
``is_admin`` = the caller's Manage Server permission in that channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import discord

from bot.bounded import BoundedSet
from bot.command import Command
from bot.conversation import Attachment, CommandRequest, Destination, IncomingMessage, Quote
from bot.text import strip_mentions
from connectors.discord.commands import option_values

PLATFORM = "discord"


class Participation:
    """What the bot remembers about its own activity: recent message ids and threads it took part in.

    Both are bounded (least recently used forgotten first), so a long-running bot does not grow
    without limit. A reply to a message older than the window still counts when discord.py
    resolved the referenced message (Discord sends it along), and a forgotten thread still counts
    while the bot is a member of it or owns it.
    """

    def __init__(self, max_messages: int = 10_000, max_threads: int = 4096) -> None:
        self._messages: BoundedSet[int] = BoundedSet(max_messages)
        self._threads: BoundedSet[int] = BoundedSet(max_threads)

    def sent(self, message_id: int) -> None:
        self._messages.add(message_id)

    def is_own(self, message_id: int | None) -> bool:
        return message_id is not None and message_id in self._messages

    def joined(self, thread_id: int) -> None:
        self._threads.add(thread_id)

    def in_thread(self, thread_id: int) -> bool:
        return thread_id in self._threads


def mention_of(user_id: int) -> re.Pattern[str]:
    """How Discord writes a mention of ``user_id`` (``<@id>``, and the legacy ``<@!id>``)."""
    return re.compile(rf"<@!?{user_id}>")


def _replies_to_bot(message: discord.Message, me: discord.ClientUser, seen: Participation) -> bool:
    reference = message.reference
    if reference is None:
        return False
    resolved = reference.resolved
    if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
        return True
    return seen.is_own(reference.message_id)


def _quote(message: discord.Message, me: discord.ClientUser) -> Quote | None:
    """The message ``message`` replies to, when Discord sent it along (a deleted one is not)."""
    resolved = message.reference.resolved if message.reference is not None else None
    if not isinstance(resolved, discord.Message) or not resolved.content:
        return None
    return Quote(resolved.author.display_name, strip_mentions(resolved.content, mention_of(me.id)))


def _in_joined_thread(thread: discord.Thread, me: discord.ClientUser, seen: Participation) -> bool:
    return seen.in_thread(thread.id) or thread.owner_id == me.id or thread.me is not None


def _is_admin(author: discord.User | discord.Member) -> bool:
    return isinstance(author, discord.Member) and author.guild_permissions.manage_guild


def to_incoming(
    message: discord.Message,
    me: discord.ClientUser,
    seen: Participation,
    attachments: Sequence[Attachment] = (),
) -> IncomingMessage | None:
    """The core's view of ``message``, or ``None`` when the bot must not see it at all.

    ``attachments`` are its files (:attr:`discord.Message.attachments`) with their downloads."""
    if message.author.bot or message.author.id == me.id:
        return None
    is_direct = message.guild is None
    mentioned = any(user.id == me.id for user in message.mentions)
    addressed = is_direct or mentioned or _replies_to_bot(message, me, seen)
    channel_id = message.channel.id
    thread_id: int | None = None
    if isinstance(message.channel, discord.Thread):
        thread = message.channel
        thread_id = thread.id
        channel_id = thread.parent_id
        if addressed:
            seen.joined(thread.id)
        else:
            addressed = _in_joined_thread(thread, me, seen)
    return IncomingMessage(
        platform=PLATFORM,
        channel=str(channel_id),
        user=str(message.author.id),
        message_id=str(message.id),
        text=strip_mentions(message.content, mention_of(me.id)),
        thread=None if thread_id is None else str(thread_id),
        is_direct=is_direct,
        addressed=addressed,
        user_name=message.author.display_name,
        is_admin=_is_admin(message.author),
        quote=_quote(message, me),
        attachments=tuple(attachments),
    )


def find_command(commands: Sequence[Command], data: Mapping[str, Any]) -> Command | None:
    name = str(data.get("name", ""))
    return next((command for command in commands if command.name == name), None)


def to_command_request(
    interaction: discord.Interaction[Any], commands: Sequence[Command], handle: object = None
) -> CommandRequest:
    """The core's view of a slash command; answers go to a destination carrying ``handle``."""
    data: Mapping[str, Any] = interaction.data or {}
    channel = interaction.channel
    thread: str | None = None
    if isinstance(channel, discord.Thread):
        thread, channel_id = str(channel.id), str(channel.parent_id)
    else:
        channel_id = str(interaction.channel_id)
    is_direct = interaction.guild_id is None
    user = interaction.user
    return CommandRequest(
        platform=PLATFORM,
        channel=channel_id,
        user=str(user.id),
        name=str(data.get("name", "")),
        args=option_values(find_command(commands, data), data),
        message_id=str(interaction.id),
        thread=thread,
        is_direct=is_direct,
        user_name=user.display_name,
        is_admin=not is_direct and interaction.permissions.manage_guild,
        destination=Destination(channel_id, thread, None, is_group=not is_direct, handle=handle),
    )
