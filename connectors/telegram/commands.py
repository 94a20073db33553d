"""Native commands on Telegram: the core's commands in the command menu, ``/cmd`` messages as requests.

Registration (``setMyCommands``, on start): the commands everyone may use in the default scope; all
commands, admin ones included, for chat administrators (``BotCommandScopeAllChatAdministrators``)
and in the private chats of the Telegram users listed in ``PARLEY_ADMINS``. The menu is a hint
only: the core checks permissions on every call.

Telegram command names are ``[a-z0-9_]{1,32}``; a core name's ``-`` becomes ``_`` in the menu and
is mapped back when the command comes in. A name that still does not fit is left out of the menu
(logged); it can still be typed when it reaches the bot.

Which messages are commands for this bot (see :func:`parse_command` and :meth:`CommandNames.resolve`):

- a message is a command when it starts with a ``bot_command`` entity, ``/name`` or ``/name@bot``;
  such a message never goes to the model as chat text;
- ``/name@otherbot`` is another bot's: ignored;
- in a private chat, or as ``/name@thisbot``, it is for this bot, known or not (an unknown name is
  answered "Unknown command … Try /help");
- in a group, a bare ``/name`` is for this bot only when ``name`` is one of its commands: Telegram
  shows bare commands to every bot in the group, and an unknown one most likely belongs to another;
- ``/start`` (what Telegram's Start button sends) runs ``/help`` unless a plugin declares ``start``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import Bot, BotCommand, Message, MessageEntity
from telegram.constants import BotCommandLimit, ChatMemberStatus
from telegram.error import TelegramError

from bot.bounded import BoundedDict
from bot.command import Command
from bot.text import one_line

log = logging.getLogger(__name__)

TELEGRAM_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_COMMANDS = 100
"""Telegram takes at most 100 commands per scope."""
ADMIN_STATUSES = frozenset({ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER})


def telegram_name(name: str) -> str | None:
    """The menu name of a core command, or ``None`` when Telegram cannot show it."""
    mapped = name.lower().replace("-", "_")
    return mapped if TELEGRAM_NAME.match(mapped) else None


def _description(command: Command) -> str:
    return one_line(command.description, BotCommandLimit.MAX_DESCRIPTION, command.name)


@dataclass(frozen=True, slots=True)
class TypedCommand:
    """A command as typed at the start of a message."""

    name: str
    """Lowercased, without the ``/`` and the ``@bot`` suffix."""
    target: str
    """The ``@bot`` suffix without ``@`` (lowercased), or ``""``."""
    args: str
    """The raw text after the command (the core parses it)."""


def parse_command(message: Message) -> TypedCommand | None:
    """The command a text message starts with, or ``None``."""
    text = message.text
    if text is None:
        return None
    entity = next(
        (e for e in message.entities if e.type == MessageEntity.BOT_COMMAND and e.offset == 0),
        None,
    )
    if entity is None:
        return None
    # Command names and bot usernames are ASCII, so UTF-16 lengths are string lengths here.
    typed = text[: entity.length]
    name, _, target = typed.removeprefix("/").partition("@")
    if not name:
        return None
    return TypedCommand(name.lower(), target.lower(), text[entity.length :].strip())


@dataclass(frozen=True, slots=True)
class CommandNames:
    """The core's commands under their Telegram names."""

    by_name: dict[str, Command]

    @classmethod
    def of(cls, commands: Sequence[Command]) -> CommandNames:
        by_name: dict[str, Command] = {}
        for command in commands:
            name = telegram_name(command.name)
            if name is None:
                log.warning("telegram: /%s cannot be a Telegram command name; left out of the menu", command.name)
            elif name in by_name:
                first = by_name[name].name
                log.warning(
                    "telegram: /%s and /%s both become /%s; /%s is left out", first, command.name, name, command.name
                )
            else:
                by_name[name] = command
        return cls(by_name)

    def resolve(self, typed: TypedCommand, *, bot_username: str, is_direct: bool) -> str | None:
        """The core name to run for ``typed``, or ``None`` when the command is not for this bot."""
        if typed.target and typed.target != bot_username.lower():
            return None
        command = self.by_name.get(typed.name)
        if command is not None:
            return command.name
        if typed.name == "start" and "help" in self.core_names:
            return "help"
        if is_direct or typed.target:
            return typed.name
        return None

    @property
    def core_names(self) -> set[str]:
        return {command.name for command in self.by_name.values()}

    def menu(self, *, admin: bool) -> list[BotCommand]:
        """The command menu: everyone's commands, or all of them for admins."""
        shown = [
            BotCommand(name, _description(command))
            for name, command in sorted(self.by_name.items())
            if admin or not command.admin
        ]
        if len(shown) > MAX_COMMANDS:
            log.warning("telegram: %d commands; the menu shows the first %d", len(shown), MAX_COMMANDS)
        return shown[:MAX_COMMANDS]


def telegram_admins(admins: Sequence[str]) -> list[int]:
    """The Telegram user ids among ``PARLEY_ADMINS`` entries (``telegram:<id>``)."""
    found = []
    for entry in admins:
        platform, _, user = entry.partition(":")
        if platform == "telegram" and user.lstrip("-").isdigit():
            found.append(int(user))
    return found


class ChatAdmins:
    """Who administers a group, asked with ``getChatMember`` and remembered for ``ttl`` seconds.

    At most ``maxsize`` (chat, user) answers are kept; a forgotten one is asked again.
    """

    def __init__(self, ttl: float, maxsize: int = 10_000) -> None:
        self._seen: BoundedDict[tuple[int, int], bool] = BoundedDict(maxsize, ttl=ttl)

    async def is_admin(self, bot: Bot, chat_id: int, user_id: int) -> bool:
        seen = self._seen.get((chat_id, user_id))
        if seen is not None:
            return seen
        try:
            member = await bot.get_chat_member(chat_id, user_id)
        except TelegramError as exc:
            # Not an admin this time; asked again next time (not remembered).
            log.warning("telegram: getChatMember %s in %s failed: %s", user_id, chat_id, exc)
            return False
        admin = member.status in ADMIN_STATUSES
        self._seen[(chat_id, user_id)] = admin
        return admin
