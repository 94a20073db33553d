"""The plugin API: everything a plugin author writes against, and nothing else.

A plugin is a module (or package) that exposes ``plugin = Plugin(...)`` (or a function returning
one), found among the built-ins in ``plugins/`` or through the entry-point group
``parley.plugins``::

    from typing import Annotated
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
  ``Annotated[T, Arg(...)]`` adds a description and limits. The handler answers with
  ``inv.reply(...)`` / ``inv.stream(...)``, or returns a string (sent as a reply) or ``None``.
- :class:`Invocation` is all a handler may touch: who called, where, the plugin's settings, and the
  actions of :class:`Invocation` (reply, stream a model answer, read and change this channel's
  settings, stop or reset this conversation, read stats). The core behind it can change without
  breaking plugins.
- ``Router.middleware`` wraps the handling of every addressed message and command, in the style
  of aiogram: ``async def mw(handler, message, ctx) -> str | None``. Call ``await handler(message)``
  (or with a replacement message) to go on, and get the reply text back (``None`` when nothing
  was answered, as for commands); return without calling it to stop the message, telling the
  user why with ``await ctx.tell(note)`` if they should know. Code after the call runs after the
  reply was delivered. The first plugin loaded is the outermost layer.
- ``Plugin.settings_model`` (a pydantic model) is filled from ``PARLEY_PLUGINS__<NAME>__<FIELD>``
  and handed to handlers as ``inv.settings``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from bot.command import Arg, Command, Handler, command_from
from bot.conversation import Attachment, ConversationKey, IncomingMessage, Scope
from bot.errors import CommandError, PluginError
from bot.exchange import Exchange
from bot.memory import Note, NoteBook
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import ChannelSettings, ChannelStats

__all__ = [
    "Arg",
    "Attachment",
    "ChannelSettings",
    "ChannelStats",
    "Command",
    "CommandError",
    "IncomingMessage",
    "Invocation",
    "MessageContext",
    "Metrics",
    "Middleware",
    "Next",
    "Note",
    "NoteBook",
    "Plugin",
    "Router",
    "Scope",
]


class Replier(Protocol):
    """How a command answers on its platform (provided by the connector or the web API)."""

    async def text(self, text: str, *, ephemeral: bool = False) -> None: ...

    async def stream(self, exchange: Exchange) -> str:
        """Deliver a streamed model reply; return its text."""


class PluginHost(Protocol):
    """What the core does for plugins; implemented by the chat service, reached through ``Invocation``."""

    @property
    def default_system_prompt(self) -> str: ...

    @property
    def metrics(self) -> Metrics: ...

    def engine_status(self) -> str: ...

    async def stream_answer(
        self, key: ConversationKey, prompt: str, requester: str, replier: Replier, requester_name: str = ""
    ) -> str: ...

    def stop_reply(self, key: ConversationKey, user: str) -> bool: ...

    async def reset(self, key: ConversationKey) -> None: ...

    def channel_settings(self, platform: str, channel: str) -> ChannelSettings: ...

    async def set_channel_settings(self, platform: str, channel: str, settings: ChannelSettings) -> None: ...

    async def channel_stats(self, platform: str, channel: str) -> ChannelStats: ...

    @property
    def personas(self) -> Mapping[str, str]: ...

    def persona_of(self, key: ConversationKey) -> str | None: ...

    def conversation_persona(self, key: ConversationKey) -> str | None: ...

    async def set_conversation_persona(self, key: ConversationKey, persona: str | None) -> None: ...

    def memory(self, platform: str, *, user: str = "", channel: str = "") -> NoteBook: ...

    @property
    def models(self) -> Mapping[str, str]: ...

    def model_status(self, name: str) -> str: ...

    def model_of(self, key: ConversationKey) -> str: ...

    def channel_model(self, platform: str, channel: str) -> str: ...

    def allowed_models(self, platform: str, channel: str) -> list[str]: ...

    def conversation_model(self, key: ConversationKey) -> str | None: ...

    async def set_conversation_model(self, key: ConversationKey, model: str | None) -> None: ...


@dataclass
class Invocation:
    """A command being run, as its handler sees it: the caller, the place, and what it may do there."""

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
    available: Sequence[Command]
    """The commands this caller may run."""
    replier: Replier
    host: PluginHost
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
        return await self.host.stream_answer(self.key, prompt, self.user, self.replier, self.user_name)

    def stop_reply(self) -> bool:
        """Stop the reply being written in this conversation (or the caller's, elsewhere in the
        channel); ``False`` if there was none."""
        return self.host.stop_reply(self.key, self.user)

    async def reset(self) -> None:
        """Forget this conversation's history: the next message starts afresh."""
        await self.host.reset(self.key)

    def channel_settings(self) -> ChannelSettings:
        """This channel's settings (system prompt, scope)."""
        return self.host.channel_settings(self.platform, self.channel)

    async def set_channel_settings(self, settings: ChannelSettings) -> None:
        """Change this channel's settings; they apply from the next reply."""
        await self.host.set_channel_settings(self.platform, self.channel, settings)

    async def channel_stats(self) -> ChannelStats:
        """Turns, replies, tokens and generation time in this channel."""
        return await self.host.channel_stats(self.platform, self.channel)

    @property
    def personas(self) -> Mapping[str, str]:
        """The configured personas: name to system prompt."""
        return self.host.personas

    def persona(self) -> str | None:
        """The persona answering in this conversation (``None``: the default prompt); the channel's
        ``/system`` prompt, if set, overrides it."""
        return self.host.persona_of(self.key)

    def chosen_persona(self) -> str | None:
        """The persona this conversation chose, whether or not the channel lets it apply."""
        return self.host.conversation_persona(self.key)

    async def set_persona(self, persona: str | None) -> None:
        """Choose this conversation's persona (a name in :attr:`personas`; ``None``: the channel's);
        it applies from the next reply. The channel's default and lock are in :meth:`channel_settings`."""
        if persona is not None and persona not in self.host.personas:
            raise ValueError(f"no persona is named {persona!r}")
        await self.host.set_conversation_persona(self.key, persona)

    @property
    def models(self) -> Mapping[str, str]:
        """Every configured model, ``default`` first: name to a one-line description."""
        return self.host.models

    def model_status(self, name: str) -> str:
        """Model ``name``'s engine status: ``ready``, ``not loaded`` (it loads when a reply needs it), …"""
        return self.host.model_status(name)

    def model(self) -> str:
        """The model answering in this conversation."""
        return self.host.model_of(self.key)

    def chosen_model(self) -> str | None:
        """The model this conversation chose with ``/model``, whether or not the channel still allows it."""
        return self.host.conversation_model(self.key)

    def channel_model(self) -> str:
        """This channel's default model."""
        return self.host.channel_model(self.platform, self.channel)

    def allowed_models(self) -> list[str]:
        """The models users may choose in this channel (its default among them)."""
        return self.host.allowed_models(self.platform, self.channel)

    async def set_model(self, model: str | None) -> None:
        """Choose this conversation's model (``None``: the channel's default); it applies from the next
        reply. Raises ``ValueError`` for a model that is not configured or not allowed here."""
        if model is not None and model not in self.allowed_models():
            raise ValueError(f"the model {model!r} is not allowed here")
        await self.host.set_conversation_model(self.key, model)

    @property
    def memory(self) -> NoteBook:
        """The caller's own notes (``/remember``): ``add``, ``list``, ``search``, ``delete``, ``clear``.
        They reach the model only in the caller's own conversations; do not show them elsewhere."""
        return self.host.memory(self.platform, user=self.user)

    @property
    def channel_memory(self) -> NoteBook:
        """This channel's notes (admins keep them with ``/remember channel``); they reach every
        conversation in the channel. Check ``is_admin`` before changing them for a caller."""
        return self.host.memory(self.platform, channel=self.channel)

    @property
    def default_system_prompt(self) -> str:
        """The system prompt channels use unless they set their own (``PARLEY_SYSTEM_PROMPT``)."""
        return self.host.default_system_prompt

    def engine_status(self) -> str:
        """The engine's health word (``ready`` when it can answer)."""
        return self.host.engine_status()

    @property
    def metrics(self) -> Metrics:
        """The app's Prometheus metrics: ``inv.metrics.counter(name, help, labels)`` adds your own."""
        return self.host.metrics


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a middleware knows besides the message: the app's settings, and how to tell the user."""

    settings: Settings
    """The app's settings, read-only."""
    is_admin: bool
    """The platform says the sender administers the chat, or they are in ``PARLEY_ADMINS``."""
    is_command: bool
    """The message is a command (``/name args``) rather than chat."""
    tell: Callable[[str], Awaitable[None]]
    """Send the user a short note (ephemeral where the platform can): why a message was stopped."""
    metrics: Metrics
    """The app's Prometheus metrics, for a middleware's own counters (``metrics.counter(...)``)."""
    memory: NoteBook | None = None
    """The sender's own notes, as ``Invocation.memory``: a middleware can keep what it learns."""


Next = Callable[[IncomingMessage], Awaitable[str | None]]
"""The rest of the chain: answers the message and returns the reply text (``None``: no reply)."""
Middleware = Callable[[Next, IncomingMessage, MessageContext], Awaitable[str | None]]
"""Wraps the handling of a message; see the module docstring."""


def chain(middlewares: Sequence[Middleware], handler: Next, context: MessageContext) -> Next:
    """``handler`` wrapped in ``middlewares``, the first one outermost."""
    wrapped = handler
    for middleware in reversed(middlewares):

        async def layer(message: IncomingMessage, mw: Middleware = middleware, inner: Next = wrapped) -> str | None:
            return await mw(inner, message, context)

        wrapped = layer
    return wrapped


@dataclass
class Router:
    """Collects a plugin's commands and middleware."""

    commands: list[Command] = field(default_factory=list)
    middlewares: list[Middleware] = field(default_factory=list)
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

    def middleware(self, middleware: Middleware) -> Middleware:
        """Wrap every addressed message and command in ``middleware``; see the module docstring."""
        self.middlewares.append(middleware)
        return middleware


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
