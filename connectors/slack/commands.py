"""Slack slash commands to :class:`~bot.commands.CommandRequest`: pure functions, no SDK.

Slack sends ``/<prefix><name> text`` with the caller (``user_id``), the channel (``channel_id``)
and a ``response_url``. The core gets the command name without the slash and without
``PARLEY_SLACK__COMMAND_PREFIX``, and the raw text (Slack escapes ``&<>`` as in messages; that is
undone) which the core parses itself. Slash commands carry no thread, so answers go to the
channel, and the conversation is the caller's (or the channel's when it is shared).

The :class:`CommandHandle` in ``Destination.handle`` lets the connector answer ephemerally
(``chat.postEphemeral`` to the caller) and fall back to the ``response_url`` where the bot cannot
post (a channel it was not invited to, someone else's DM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.commands import CommandRequest
from bot.conversation import Destination
from connectors.slack.events import PLATFORM
from connectors.slack.mrkdwn import unescape


@dataclass(frozen=True, slots=True)
class CommandHandle:
    """What an answer to a slash command needs beyond the channel."""

    user: str
    response_url: str = ""


def command_name(slack_command: str, prefix: str) -> str:
    """The core's name for ``/<prefix><name>`` (a command without the prefix keeps its name)."""
    name = slack_command.strip().lstrip("/").lower()
    if prefix and name.startswith(prefix) and len(name) > len(prefix):
        return name[len(prefix) :]
    return name


def slack_command(name: str, prefix: str) -> str:
    """The Slack command for the core's command ``name``."""
    return f"/{prefix}{name}"


def is_direct(channel: str) -> bool:
    """Direct messages have ids starting with D (group DMs are G/C and count as groups)."""
    return channel.startswith("D")


def to_request(
    payload: Mapping[str, Any], *, prefix: str, user_name: str = "", is_admin: bool = False
) -> CommandRequest | None:
    """The request a slash-command payload carries, or None if it lacks the caller or the channel."""
    user, channel = payload.get("user_id"), payload.get("channel_id")
    if not isinstance(user, str) or not user or not isinstance(channel, str) or not channel:
        return None
    text = payload.get("text")
    direct = is_direct(channel)
    handle = CommandHandle(user=user, response_url=str(payload.get("response_url") or ""))
    return CommandRequest(
        platform=PLATFORM,
        channel=channel,
        user=user,
        name=command_name(str(payload.get("command", "")), prefix),
        args=unescape(text).strip() if isinstance(text, str) else "",
        is_direct=direct,
        user_name=user_name or str(payload.get("user_name") or user),
        is_admin=is_admin,
        destination=Destination(channel=channel, is_group=not direct, handle=handle),
        prefix=prefix,
    )
