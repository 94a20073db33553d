"""Slack events and slash commands as the core's :class:`~bot.conversation.IncomingMessage` and
:class:`~bot.conversation.CommandRequest`: who is talking, and is it to us.

Pure functions, no SDK: the connector feeds them the event and command dicts Bolt hands it.

When the bot answers:

- every user message in a DM (``im``), in the DM or in the thread the user wrote in;
- a mention (``app_mention``, or a ``message`` whose text holds ``<@BOT>``) anywhere: the reply
  goes into the message's thread, a new one under the message for a top-level mention;
- any user message in a thread the bot takes part in: one it was mentioned or answered in since
  the process started (a :class:`~bot.bounded.BoundedSet`, in memory) or one whose root the bot
  posted (``parent_user_id``); the connector also asks the store, so a thread answered before a
  restart still counts.

Never: the bot's own messages, other bots' (``bot_id``, ``bot_message``), and edits, deletions,
joins and other subtypes. A thread is one shared conversation (``thread`` set, not direct); a
DM is per user (``is_direct``), threaded or not.

A slash command (:func:`to_command_request`) is ``/<prefix><name> text`` with the caller
(``user_id``), the channel (``channel_id``) and a ``response_url``. The core gets the command name
without the slash and without ``PARLEY_SLACK__COMMAND_PREFIX``, and the raw text (Slack escapes
``&<>`` as in messages; that is undone) which the core parses itself. Slash commands carry no
thread, so answers go to the channel, and the conversation is the caller's (or the channel's when
it is shared). The :class:`CommandHandle` in ``Destination.handle`` lets the connector answer
ephemerally (``chat.postEphemeral`` to the caller) and fall back to the ``response_url`` where the
bot cannot post (a channel it was not invited to, someone else's DM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from bot.bounded import BoundedSet
from bot.conversation import Attachment, CommandRequest, Destination, IncomingMessage
from bot.text import strip_mentions
from connectors.slack.commands import command_name
from connectors.slack.render import unescape

PLATFORM = "slack"

# Subtypes that are still a person writing to the channel; every other subtype is housekeeping.
USER_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


ThreadKeys = BoundedSet[tuple[str, str]]
"""``(channel, thread_ts)`` of threads the bot takes part in."""


def is_direct_channel(channel: str) -> bool:
    """Direct-message channel ids start with D (group DMs are G/C and count as groups)."""
    return channel.startswith("D")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """The bot as ``auth.test`` reports it."""

    user_id: str
    bot_id: str | None = None

    @property
    def mention(self) -> re.Pattern[str]:
        return re.compile(rf"<@{re.escape(self.user_id)}(?:\|[^>]*)?>")


def is_slack_id(value: object) -> TypeGuard[str]:
    """A user or channel id, or a ``ts``, as Slack writes them (letters, digits, dots)."""
    return isinstance(value, str) and bool(value) and value.isascii() and value.replace(".", "").isalnum()


def is_from_a_person(event: Mapping[str, Any], identity: BotIdentity) -> bool:
    """False for bot messages (ours or others'), housekeeping subtypes and malformed events."""
    if event.get("type") not in ("message", "app_mention"):
        return False
    subtype = event.get("subtype")
    if subtype is not None and (not isinstance(subtype, str) or subtype not in USER_SUBTYPES):
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    if not is_slack_id(user) or user == identity.user_id:
        return False
    return all(is_slack_id(event.get(name)) for name in ("channel", "ts"))


def channel_type(event: Mapping[str, Any]) -> str:
    """``im``, ``mpim``, ``channel`` or ``group``; ``app_mention`` events carry none, so guess by id."""
    kind = event.get("channel_type")
    if isinstance(kind, str) and kind:
        return kind
    return "im" if is_direct_channel(str(event.get("channel", ""))) else "channel"


def user_name_of(event: Mapping[str, Any]) -> str | None:
    """The display name some events carry (``user_profile``), if any."""
    profile = event.get("user_profile")
    if isinstance(profile, Mapping):
        for field in ("display_name", "real_name", "name"):
            value = profile.get(field)
            if isinstance(value, str) and value:
                return value
    return None


def clean_text(text: str, identity: BotIdentity) -> str:
    """The text for the model: the bot's mention removed and Slack's escaping undone."""
    return unescape(strip_mentions(text, identity.mention))


@dataclass(frozen=True, slots=True)
class SlackFile:
    """A file of a message as the event lists it; ``url`` is its ``url_private_download`` ("" if none)."""

    name: str
    mime: str
    size: int | None
    url: str


def files_of(event: Mapping[str, Any]) -> list[SlackFile]:
    """The files an event carries, in order; ``url`` is empty for one that cannot be downloaded
    (deleted, external, hidden by the workspace's plan, no URL). Entries that are not objects are
    skipped."""
    found = []
    files = event.get("files")
    for item in files if isinstance(files, list) else []:
        if not isinstance(item, Mapping):
            continue
        url = item.get("url_private_download") or item.get("url_private")
        if item.get("mode") in ("tombstone", "external", "hidden_by_limit") or not isinstance(url, str):
            url = ""  # listed so the user hears it was not read; its download fails at once
        elif not url.startswith(("https://", "http://")):
            url = ""
        name = item.get("name") or item.get("title") or item.get("id") or "file"
        mime = item.get("mimetype")
        size = item.get("size")
        found.append(
            SlackFile(
                str(name),
                mime if isinstance(mime, str) else "",
                size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
                url,
            )
        )
    return found


def to_incoming(
    event: Mapping[str, Any],
    identity: BotIdentity,
    threads: ThreadKeys,
    *,
    mentioned: bool = False,
    user_name: str = "",
    is_admin: bool = False,
    attachments: Sequence[Attachment] = (),
) -> IncomingMessage | None:
    """The message ``event`` carries, or None if it is not a person's message.

    ``mentioned`` is True for ``app_mention`` events; a ``message`` that mentions the bot counts
    too, so whichever of the two copies of a mention arrives first gives the same message.
    ``threads`` holds ``(channel, thread_ts)`` of threads the bot takes part in.
    """
    if not is_from_a_person(event, identity):
        return None
    channel = str(event["channel"])
    ts = str(event["ts"])
    raw = event.get("text")
    text = raw if isinstance(raw, str) else ""
    thread_ts = event.get("thread_ts")
    in_thread = isinstance(thread_ts, str) and bool(thread_ts) and thread_ts != ts
    direct = channel_type(event) == "im"
    mentioned = mentioned or identity.mention.search(text) is not None

    thread: str | None
    if direct:
        addressed = True
        thread = str(thread_ts) if in_thread else None
    elif in_thread:
        thread = str(thread_ts)
        addressed = mentioned or (channel, thread) in threads or event.get("parent_user_id") == identity.user_id
    else:
        addressed = mentioned
        thread = ts if mentioned else None  # a mention starts a thread under the message
    return IncomingMessage(
        platform=PLATFORM,
        channel=channel,
        user=str(event["user"]),
        message_id=ts,
        text=clean_text(text, identity),
        thread=thread,
        is_direct=direct,
        addressed=addressed,
        user_name=user_name or user_name_of(event) or str(event["user"]),
        is_admin=is_admin,
        attachments=tuple(attachments),
    )


@dataclass(frozen=True, slots=True)
class CommandHandle:
    """What an answer to a slash command needs beyond the channel."""

    user: str
    response_url: str = ""


def to_command_request(
    payload: Mapping[str, Any], *, prefix: str, user_name: str = "", is_admin: bool = False
) -> CommandRequest | None:
    """The request a slash-command payload carries, or None if it lacks the caller or the channel
    (or they, or the command's name, are not what Slack sends)."""
    user, channel = payload.get("user_id"), payload.get("channel_id")
    if not is_slack_id(user) or not is_slack_id(channel):
        return None
    name = command_name(str(payload.get("command", "")), prefix)
    if not (name.isascii() and name.isprintable()):
        return None  # Slack's command names are ASCII
    text = payload.get("text")
    direct = is_direct_channel(channel)
    handle = CommandHandle(user=user, response_url=str(payload.get("response_url") or ""))
    return CommandRequest(
        platform=PLATFORM,
        channel=channel,
        user=user,
        name=name,
        args=unescape(text).strip() if isinstance(text, str) else "",
        is_direct=direct,
        user_name=user_name or str(payload.get("user_name") or user),
        is_admin=is_admin,
        destination=Destination(channel=channel, is_group=not direct, handle=handle),
        prefix=prefix,
    )
