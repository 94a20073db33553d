"""Slack events to :class:`~bot.conversation.IncomingMessage`: who is talking, and is it to us.

Pure functions and small caches, no SDK: the connector feeds them the event dicts Bolt hands it.

When the bot answers:

- every user message in a DM (``im``), in the DM or in the thread the user wrote in;
- a mention (``app_mention``, or a ``message`` whose text holds ``<@BOT>``) anywhere: the reply
  goes into the message's thread, a new one under the message for a top-level mention;
- any user message in a thread the bot takes part in: one it was mentioned or answered in since
  the process started (:class:`RecentKeys`, in memory and bounded) or one whose root the bot
  posted (``parent_user_id``); the connector also asks the store, so a thread answered before a
  restart still counts.

Never: the bot's own messages, other bots' (``bot_id``, ``bot_message``), and edits, deletions,
joins and other subtypes. A thread is one shared conversation (``thread`` set, not direct); a
DM is per user (``is_direct``), threaded or not.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.conversation import IncomingMessage
from connectors.slack.mrkdwn import unescape

PLATFORM = "slack"

# Subtypes that are still a person writing to the channel; every other subtype is housekeeping.
USER_SUBTYPES = frozenset({"thread_broadcast", "file_share"})


class RecentKeys:
    """A bounded set that forgets its oldest keys: dedupe of event ids, memory of threads."""

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; True if it was new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """The bot as ``auth.test`` reports it."""

    user_id: str
    bot_id: str | None = None

    @property
    def mention(self) -> re.Pattern[str]:
        return re.compile(rf"<@{re.escape(self.user_id)}(?:\|[^>]*)?>")


def is_from_a_person(event: Mapping[str, Any], identity: BotIdentity) -> bool:
    """False for bot messages (ours or others'), housekeeping subtypes and malformed events."""
    if event.get("type") not in ("message", "app_mention"):
        return False
    subtype = event.get("subtype")
    if subtype is not None and subtype not in USER_SUBTYPES:
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    if not isinstance(user, str) or not user or user == identity.user_id:
        return False
    return all(isinstance(event.get(name), str) and event.get(name) for name in ("channel", "ts"))


def channel_type(event: Mapping[str, Any]) -> str:
    """``im``, ``mpim``, ``channel`` or ``group``; ``app_mention`` events carry none, so guess by id."""
    kind = event.get("channel_type")
    if isinstance(kind, str) and kind:
        return kind
    return "im" if str(event.get("channel", "")).startswith("D") else "channel"


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
    without = identity.mention.sub("", text)
    return unescape(re.sub(r"[ \t]{2,}", " ", without)).strip()


def translate(
    event: Mapping[str, Any],
    identity: BotIdentity,
    threads: RecentKeys,
    *,
    mentioned: bool = False,
    user_name: str = "",
    is_admin: bool = False,
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
        extra={"team": str(event.get("team", "")), "channel_type": channel_type(event)},
    )
