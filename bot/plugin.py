"""The plugin API: what a plugin author writes against.

A plugin is a module (or package) that exposes ``plugin = Plugin(...)``, found among the built-ins
in ``plugins/`` or through the entry-point group ``parley.plugins``::

    from typing import Annotated, Literal
    from bot.plugin import Arg, Invocation, Plugin, Router

    router = Router()

    @router.command(description="Roll dice", cooldown=5)
    async def roll(inv: Invocation, sides: Annotated[int, Arg("faces per die", min=2, max=100)] = 6) -> str:
        return f"{inv.user_name} rolled {random.randint(1, sides)}"

    plugin = Plugin(name="dice", description="Dice for games", version="1.0", router=router)

Contracts:
- A command handler is ``async def handler(inv: Invocation, **params)``. Each parameter after the
  first is an option whose type is one of ``str``, ``int``, ``float``, ``bool``, a ``Literal`` of
  strings (a choice), or any of these ``| None`` (optional); a default makes it optional too.
  ``Annotated[T, Arg(...)]`` adds a description and limits. The handler replies with
  ``inv.reply(...)`` / ``inv.stream(...)``, or returns a string (sent as a reply) or ``None``.
- ``Router.before_message`` hooks see every addressed message and command before the engine does;
  they return ``None`` (go on), a replacement ``IncomingMessage``, or ``Deny(note)`` (stop; ``note``,
  if any, is sent to the user).
- ``Router.after_reply`` hooks run after a reply was delivered, with the message and the reply text.
- ``Plugin.settings_model`` (a pydantic model) is filled from ``PARLEY_PLUGINS__<NAME>__<FIELD>``
  and handed to handlers as ``inv.settings``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from bot.conversation import ConversationKey, IncomingMessage
from bot.errors import PluginError

if TYPE_CHECKING:
    from bot.chat import ChatService, Exchange

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ParamKind = Literal["text", "integer", "number", "boolean", "choice"]
DEFAULT_MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class Arg:
    """Describes a command parameter inside ``Annotated[...]``."""

    description: str = ""
    max_length: int | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """One typed command parameter, as platforms register it."""

    name: str
    kind: ParamKind
    description: str = ""
    required: bool = True
    choices: tuple[str, ...] = ()
    default: object = None
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None

    def placeholder(self) -> str:
        shown = "|".join(self.choices) if self.kind == "choice" else self.name
        return f"<{shown}>" if self.required else f"[{shown}]"


Handler = Callable[..., Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Command:
    """A declared command."""

    name: str
    description: str
    params: tuple[Param, ...]
    handler: Handler
    admin: bool = False
    cooldown: float = 0.0
    plugin: str = ""

    @property
    def usage(self) -> str:
        return self.usage_for("")

    def usage_for(self, prefix: str) -> str:
        """The usage line as the user types it on a platform that prefixes commands (Slack)."""
        return " ".join([f"/{prefix}{self.name}", *(p.placeholder() for p in self.params)])


@dataclass(frozen=True, slots=True)
class Deny:
    """Returned by a ``before_message`` hook to stop a message; ``note`` is told to the user."""

    note: str | None = None


BeforeHook = Callable[[IncomingMessage, "ChatService"], Awaitable[IncomingMessage | Deny | None]]
"""Sees each addressed message and command first: ``None`` goes on, a message replaces it, ``Deny`` stops it."""
AfterHook = Callable[[IncomingMessage, str], Awaitable[None]]
"""Runs after a reply to ``message`` was delivered, with the reply's text."""


class Replier(Protocol):
    """How a command answers on its platform (provided by the connector or the web API)."""

    async def text(self, text: str, *, ephemeral: bool = False) -> None: ...

    async def stream(self, exchange: Exchange) -> str:
        """Deliver a streamed model reply; return its text."""


@dataclass
class Invocation:
    """A command being run, as its handler sees it."""

    command: Command
    args: dict[str, Any]
    platform: str
    channel: str
    user: str
    user_name: str
    key: ConversationKey
    """The conversation the command was sent in (the scope policy applied)."""
    is_admin: bool
    settings: Any
    """The plugin's settings model instance, or ``None``."""
    chat: ChatService
    available: Sequence[Command]
    """The commands this caller may run."""
    replier: Replier
    prefix: str = ""
    """What the platform puts before command names (``/{prefix}{name}``), for help texts."""
    replied: bool = False

    async def reply(self, text: str, *, ephemeral: bool = False) -> None:
        """Send text; ``ephemeral`` shows it to the caller only where the platform can."""
        self.replied = True
        await self.replier.text(text, ephemeral=ephemeral)

    async def stream(self, prompt: str) -> str:
        """Answer ``prompt`` with the model in this conversation, streamed; returns the text."""
        self.replied = True
        async with self.chat.exchange(self.key, prompt, requester=self.user) as exchange:
            return await self.replier.stream(exchange)


def _unwrap(annotation: Any) -> tuple[Any, Arg, bool]:
    """(base type, Arg, optional) of a parameter annotation."""
    arg = Arg()
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        arg = next((extra for extra in extras if isinstance(extra, Arg)), arg)
        annotation = base
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            raise PluginError(f"parameter type {annotation} is not supported (one type, optionally | None)")
        annotation = members[0]
    return annotation, arg, optional


_KINDS: dict[Any, ParamKind] = {str: "text", int: "integer", float: "number", bool: "boolean"}


def _param(name: str, annotation: Any, default: Any) -> Param:
    base, arg, optional = _unwrap(annotation)
    choices: tuple[str, ...] = ()
    if typing.get_origin(base) is Literal:
        choices = tuple(str(choice) for choice in typing.get_args(base))
        kind: ParamKind = "choice"
    elif base in _KINDS:
        kind = _KINDS[base]
    else:
        raise PluginError(f"parameter {name!r} has type {base!r}; use str, int, float, bool or Literal[...]")
    has_default = default is not inspect.Parameter.empty
    return Param(
        name=name,
        kind=kind,
        description=arg.description,
        required=not (optional or has_default),
        choices=choices,
        default=default if has_default else None,
        max_length=arg.max_length if arg.max_length is not None else (DEFAULT_MAX_TEXT if kind == "text" else None),
        min_value=arg.min,
        max_value=arg.max,
    )


def command_from(handler: Handler, *, name: str | None, description: str, admin: bool, cooldown: float) -> Command:
    """Build a command from a handler's signature; raise ``PluginError`` if it cannot be one."""
    command_name = (name or handler.__name__).lower()
    if not NAME.match(command_name):
        raise PluginError(f"command name {command_name!r} must match {NAME.pattern}")
    if not description or len(description) > 100:
        raise PluginError(f"/{command_name}: a description of 1 to 100 characters is required")
    if not inspect.iscoroutinefunction(handler):
        raise PluginError(f"/{command_name}: the handler must be an async function")
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except (NameError, TypeError) as exc:
        raise PluginError(f"/{command_name}: cannot read parameter types: {exc}") from exc
    signature = inspect.signature(handler)
    names = list(signature.parameters)
    if not names:
        raise PluginError(f"/{command_name}: the handler's first parameter receives the Invocation")
    params: list[Param] = []
    for param_name in names[1:]:
        parameter = signature.parameters[param_name]
        if param_name not in hints:
            raise PluginError(f"/{command_name}: parameter {param_name!r} needs a type annotation")
        params.append(_param(param_name, hints[param_name], parameter.default))
    seen_optional = False
    for param in params:
        if param.required and seen_optional:
            raise PluginError(f"/{command_name}: required parameter {param.name!r} follows an optional one")
        seen_optional = seen_optional or not param.required
    return Command(command_name, description, tuple(params), handler, admin, float(cooldown))


@dataclass
class Router:
    """Collects a plugin's commands and message hooks."""

    commands: list[Command] = field(default_factory=list)
    before: list[BeforeHook] = field(default_factory=list)
    after: list[AfterHook] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Declarations that were refused (reported at load time)."""

    def command(
        self, name: str | None = None, *, description: str, admin: bool = False, cooldown: float = 0.0
    ) -> Callable[[Handler], Handler]:
        """Declare a command; see the module docstring for the handler's shape."""

        def register(handler: Handler) -> Handler:
            try:
                self.commands.append(
                    command_from(handler, name=name, description=description, admin=admin, cooldown=cooldown)
                )
            except PluginError as exc:
                self.errors.append(str(exc))
            return handler

        return register

    def before_message(self, hook: BeforeHook) -> BeforeHook:
        self.before.append(hook)
        return hook

    def after_reply(self, hook: AfterHook) -> AfterHook:
        self.after.append(hook)
        return hook


@dataclass
class Plugin:
    """A plugin's metadata, router and optional settings model."""

    name: str
    description: str
    version: str
    router: Router
    settings_model: type[BaseModel] | None = None
    settings: Any = None
    """Filled at load time from ``PARLEY_PLUGINS__<NAME>__…``."""
