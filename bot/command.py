"""Command declarations: a handler's typed signature turned into options platforms can register.

:func:`command_from` reads a handler's annotations (see :mod:`bot.plugin` for the rules) into a
:class:`Command` with its :class:`Param` list; connectors register those natively (Telegram
``setMyCommands``, Discord application commands, Slack slash commands) and
:mod:`bot.commands` parses arguments against them.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bot.errors import PluginError

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

    @property
    def usage(self) -> str:
        return self.usage_for("")

    def usage_for(self, prefix: str) -> str:
        """The usage line as the user types it on a platform that prefixes commands (Slack)."""
        return " ".join([f"/{prefix}{self.name}", *(p.placeholder() for p in self.params)])


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
