"""Slash commands on Discord: the core's commands as application commands, interactions as requests.

Why raw JSON instead of discord.py's ``app_commands.CommandTree``: the core's commands are data
(:class:`bot.command.Command`), known only at run time, while a tree command is defined by a Python
callback's signature, so we would have to synthesise signatures; and the tree checks and converts
options itself, answering a bad value with its own error instead of the core's usage text. Here the
registration is a JSON list (``PUT /applications/{app}/commands``), an invocation's typed option
values (Discord sends strings, integers, numbers and booleans as JSON) go to the core unchanged,
and :func:`bot.commands.parse_args` checks them the same way as on every platform.

Admin commands are registered without ``default_member_permissions``: that would hide them from
everyone without Manage Server, including the users listed in ``PARLEY_ADMINS``. The core checks
permissions on every call and refuses ephemerally instead.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.command import Command, Param
from bot.text import one_line

log = logging.getLogger(__name__)

CHAT_INPUT = 1
OPTION_TYPES = {"text": 3, "integer": 4, "number": 10, "boolean": 5, "choice": 3}
"""Discord's option types: STRING 3, INTEGER 4, BOOLEAN 5, NUMBER 10; a choice is a STRING with choices."""
MAX_STRING_LENGTH = 6000
MAX_CHOICES = 25
MAX_OPTIONS = 25
MAX_INTEGER = 2**53
MAX_DESCRIPTION = 100
OPTION_NAME = re.compile(r"^[-_\w]{1,32}$")


def _option(param: Param) -> dict[str, Any]:
    option: dict[str, Any] = {
        "type": OPTION_TYPES[param.kind],
        "name": param.name.lower(),
        "description": one_line(param.description, MAX_DESCRIPTION, param.name),
        "required": param.required,
    }
    if param.kind == "text" and param.max_length is not None:
        option["max_length"] = max(1, min(param.max_length, MAX_STRING_LENGTH))
    if param.kind == "choice" and len(param.choices) <= MAX_CHOICES:
        # More than 25 choices cannot be offered; the core still checks the typed value.
        option["choices"] = [{"name": choice[:100], "value": choice[:100]} for choice in param.choices]
    if param.kind == "integer":
        if param.min_value is not None:
            option["min_value"] = max(-MAX_INTEGER, math.ceil(param.min_value))
        if param.max_value is not None:
            option["max_value"] = min(MAX_INTEGER, math.floor(param.max_value))
    if param.kind == "number":
        if param.min_value is not None:
            option["min_value"] = param.min_value
        if param.max_value is not None:
            option["max_value"] = param.max_value
    return option


def application_command(command: Command) -> dict[str, Any] | None:
    """The registration JSON of ``command``, or ``None`` when Discord cannot take it (logged)."""
    names = [param.name.lower() for param in command.params]
    if len(names) > MAX_OPTIONS or len(set(names)) < len(names) or not all(map(OPTION_NAME.match, names)):
        log.error("discord: /%s cannot be a slash command (option names or count); not registered", command.name)
        return None
    return {
        "type": CHAT_INPUT,
        "name": command.name,
        "description": one_line(command.description, MAX_DESCRIPTION, command.name),
        "options": [_option(param) for param in command.params],
    }


def application_commands(commands: Sequence[Command]) -> list[dict[str, Any]]:
    """The bulk-overwrite body for ``commands``: what Discord shows is exactly this list."""
    found = (application_command(command) for command in commands)
    return [payload for payload in found if payload is not None]


def option_values(command: Command | None, data: Mapping[str, Any]) -> dict[str, object]:
    """The typed values of an invocation's options, keyed by the core's parameter names.

    Option names were lowercased for Discord; unknown names pass through so the core can refuse them.
    """
    names = {param.name.lower(): param.name for param in command.params} if command is not None else {}
    values: dict[str, object] = {}
    options = data.get("options")
    for option in options if isinstance(options, list) else ():
        if not isinstance(option, Mapping):
            continue  # not what Discord sends: skipped, never an error
        name = str(option.get("name", ""))
        values[names.get(name, name)] = option.get("value")
    return values
