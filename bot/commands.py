"""Running commands: parse arguments, check permissions and cooldowns, call the handler.

Connectors turn a platform's native command (a Discord application command, a Telegram
``/cmd@bot args`` message, a Slack slash command, a web ``/cmd args``) into a
:class:`CommandRequest` and hand it over with a :class:`~bot.plugin.Replier` that knows how to answer on that
platform. Every refusal (unknown command, not allowed, cooling down, bad arguments) is a short
answer, ephemeral where the platform can, that changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.command import Command, Param
from bot.conversation import CommandRequest, ConversationKey, IncomingMessage
from bot.errors import CommandError, ParleyError
from bot.plugin import Invocation, Next, Plugin, PluginHost, Replier

log = logging.getLogger(__name__)

TRUE = {"true", "yes", "on", "1", "y"}
FALSE = {"false", "no", "off", "0", "n"}


Fail = Callable[[str], CommandError]


def usage_error(command: Command, problem: str, prefix: str = "") -> CommandError:
    return CommandError(f"{problem}\nUsage: {command.usage_for(prefix)} — {command.description}")


def _coerce(param: Param, value: object, fail: Fail) -> object:
    if param.kind == "text":
        text = str(value)
        if param.max_length is not None and len(text) > param.max_length:
            raise fail(f"{param.name} is too long ({len(text)} characters; at most {param.max_length})")
        return text
    if param.kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).lower()
        if word in TRUE | FALSE:
            return word in TRUE
        raise fail(f"{param.name} must be yes or no, not {value!r}")
    if param.kind == "choice":
        word = str(value).lower()
        for choice in param.choices:
            if choice.lower() == word:
                return choice
        raise fail(f"{param.name} must be one of {', '.join(param.choices)}, not {value!r}")
    try:
        number: float = int(str(value)) if param.kind == "integer" else float(str(value))
    except ValueError:
        kind = "a whole number" if param.kind == "integer" else "a number"
        raise fail(f"{param.name} must be {kind}, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise fail(f"{param.name} must be a finite number")
    if param.min_value is not None and number < param.min_value:
        raise fail(f"{param.name} must be at least {param.min_value:g}")
    if param.max_value is not None and number > param.max_value:
        raise fail(f"{param.name} must be at most {param.max_value:g}")
    return number


def _first_word(text: str, fail: Fail) -> tuple[str, str]:
    """Split off one word; a word in quotes may hold spaces."""
    if text[0] in "\"'":
        end = text.find(text[0], 1)
        if end < 0:
            raise fail(f"a quote ({text[0]}) is not closed")
        return text[1:end], text[end + 1 :].strip()
    word, *rest = text.split(maxsplit=1)
    return word, rest[0] if rest else ""


def parse_args(command: Command, args: str | Mapping[str, object], prefix: str = "") -> dict[str, Any]:
    """Typed arguments for ``command``; raise ``CommandError`` with the usage when they are wrong.

    Text arguments split on spaces (quotes group words); the last text parameter takes the rest of
    the line. Native options arrive as a mapping and are checked the same way.
    """

    def fail(problem: str) -> CommandError:
        return usage_error(command, problem, prefix)

    values: dict[str, object] = {}
    if isinstance(args, str):
        rest = args.strip()
        for index, param in enumerate(command.params):
            if not rest:
                break
            if param.kind == "text" and index == len(command.params) - 1:
                values[param.name] = rest
                rest = ""
                break
            word, rest = _first_word(rest, fail)
            values[param.name] = word
        if rest:
            raise fail(f"too many arguments: {rest!r}")
    else:
        unknown = set(args) - {p.name for p in command.params}
        if unknown:
            raise fail(f"unknown option {sorted(unknown)[0]!r}")
        values = {name: value for name, value in args.items() if value is not None}
    parsed: dict[str, Any] = {}
    for param in command.params:
        if param.name in values:
            parsed[param.name] = _coerce(param, values[param.name], fail)
        elif param.required:
            raise fail(f"{param.name} is missing")
        else:
            parsed[param.name] = param.default
    return parsed


Guard = Callable[[IncomingMessage, Next, Callable[[str], Awaitable[None]], bool], Awaitable[str | None]]
"""Runs a message through the plugins' middleware around a handler (the chat service's ``guard``)."""


@dataclass
class CommandRunner:
    """Runs commands from every plugin; one per app.

    ``guard`` runs the plugins' middleware around each command, ``key_for`` applies the scope
    policy, and ``host`` is what the command's :class:`~bot.plugin.Invocation` acts through.
    """

    host: PluginHost
    guard: Guard
    key_for: Callable[[IncomingMessage], ConversationKey]
    admins: frozenset[str] = frozenset()
    plugins: Sequence[Plugin] = ()
    _commands: dict[str, tuple[Command, Plugin]] = field(default_factory=dict)
    _last_use: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for plugin in self.plugins:
            for command in plugin.router.commands:
                if command.name in self._commands:
                    owner = self._commands[command.name][1].name
                    log.error("plugin %s: /%s is taken by plugin %s; skipped", plugin.name, command.name, owner)
                    continue
                self._commands[command.name] = (command, plugin)

    @property
    def commands(self) -> list[Command]:
        return [command for command, _ in self._commands.values()]

    def get(self, name: str) -> Command | None:
        found = self._commands.get(name.lower())
        return found[0] if found else None

    def is_admin(self, request: CommandRequest) -> bool:
        return request.is_admin or f"{request.platform}:{request.user}" in self.admins

    def allowed(self, request: CommandRequest) -> list[Command]:
        admin = self.is_admin(request)
        return [command for command in self.commands if admin or not command.admin]

    async def run(self, request: CommandRequest, replier: Replier) -> None:
        """Run one command; every outcome is answered through ``replier``."""
        try:
            await self._run(request, replier)
        except CommandError as exc:
            await replier.text(exc.user_message, ephemeral=True)
        except ParleyError as exc:
            log.warning("/%s by %s:%s failed: %s", request.name, request.platform, request.user, exc)
            await replier.text(f"⚠️ {exc.user_message}", ephemeral=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("/%s by %s:%s failed", request.name, request.platform, request.user)
            await replier.text(f"⚠️ /{request.name} failed; the error was logged.", ephemeral=True)

    async def _run(self, request: CommandRequest, replier: Replier) -> None:
        found = self._commands.get(request.name.lower())
        if found is None:
            raise CommandError(f"Unknown command /{request.prefix}{request.name}. Try /{request.prefix}help.")

        async def handle(_message: IncomingMessage) -> None:
            await self._invoke(request, replier, *found)

        async def tell(note: str) -> None:
            await replier.text(note, ephemeral=True)

        await self.guard(request.as_message(), handle, tell, True)

    async def _invoke(self, request: CommandRequest, replier: Replier, command: Command, plugin: Plugin) -> None:
        admin = self.is_admin(request)
        if command.admin and not admin:
            raise CommandError(f"Only admins can use /{request.prefix}{command.name}.")
        args = parse_args(command, request.args, request.prefix)
        self._cool_down(command, request)
        invocation = Invocation(
            command=command,
            args=args,
            platform=request.platform,
            channel=request.channel,
            user=request.user,
            user_name=request.user_name,
            key=self.key_for(request.as_message()),
            is_admin=admin,
            settings=plugin.settings,
            available=self.allowed(request),
            replier=replier,
            host=self.host,
            prefix=request.prefix,
        )
        result = await command.handler(invocation, **args)
        if isinstance(result, str) and result:
            await invocation.reply(result)
        elif not invocation.replied:
            await invocation.reply(f"/{command.name}: done.", ephemeral=True)

    def _cool_down(self, command: Command, request: CommandRequest) -> None:
        if command.cooldown <= 0:
            return
        now = asyncio.get_running_loop().time()
        slot = (command.name, f"{request.platform}:{request.user}")
        last = self._last_use.get(slot)
        if last is not None and now - last < command.cooldown:
            wait = math.ceil(command.cooldown - (now - last))
            raise CommandError(f"You can use /{request.prefix}{command.name} again in {wait} s.")
        self._last_use[slot] = now
