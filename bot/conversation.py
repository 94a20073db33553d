"""The platform-neutral conversation model.

Connectors turn each platform's events into these frozen dataclasses; the core never sees an SDK
object. :func:`conversation_key` is the one place that decides which messages share a history.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field


class Scope(enum.StrEnum):
    """How a group channel groups its messages into conversations."""

    PER_USER = "per-user"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Identifies one conversation: its history, its queue and its running reply.

    ``thread`` is set for a thread or forum topic; ``user`` is set when the conversation belongs to
    one user (a direct message, or a per-user conversation in a group channel).
    """

    platform: str
    channel: str
    thread: str | None = None
    user: str | None = None

    def __str__(self) -> str:
        parts = [self.platform, self.channel]
        if self.thread is not None:
            parts.append(f"thread={self.thread}")
        if self.user is not None:
            parts.append(f"user={self.user}")
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a connector posts a reply.

    ``reply_to`` is the platform message id the reply answers (platforms that support replies
    quote it); ``is_group`` lets a connector pace group chats more strictly than private ones.
    """

    channel: str
    thread: str | None = None
    reply_to: str | None = None
    is_group: bool = False
    ephemeral: bool = False
    """Show the message to the caller only, where the platform can (command answers)."""
    user: str | None = None
    """The user the reply answers, where known (Slack's chat streams name their recipient)."""
    handle: object = field(default=None, compare=False, hash=False)
    """Opaque to the core: a connector's own reply handle (e.g. an interaction to answer)."""


def clean_text(text: str) -> str:
    """``text`` as valid Unicode that can be stored and tokenized: lone surrogates (which JSON and
    some platform payloads can carry) become U+FFFD, and NUL characters are removed."""
    if not text.isascii():
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.replace("\x00", "")


def _clean_fields(record: object) -> None:
    """Clean every ``str`` field of a frozen dataclass in place (texts, names and ids alike)."""
    for name in record.__dataclass_fields__:  # type: ignore[attr-defined]
        value = getattr(record, name)
        if isinstance(value, str):
            object.__setattr__(record, name, clean_text(value))


@dataclass(frozen=True, slots=True)
class Quote:
    """The message a user replied to or quoted: its author's display name and its text, as sent.

    Connectors pass the whole text; the core trims it (``Settings.quote_chars``) when it builds the
    prompt.
    """

    author: str
    text: str

    def __post_init__(self) -> None:
        _clean_fields(self)


Fetch = Callable[[int], Awaitable[bytes]]
"""Downloads a file's bytes into memory, never past ``limit`` (its argument): a file found larger
raises ``FileTooLarge`` (or returns more than ``limit`` bytes), a refused or failed transfer
raises ``ConnectorError`` with a message fit for the log (no token, no signed URL)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message: what the platform declares about it, and how to download it.

    Connectors fill it from the SDK's file objects; :mod:`bot.attachments` decides what is read.
    ``size`` is the size the platform declares (``None`` when it says none). ``fetch`` is ``None``
    for an attachment that can no longer be downloaded (a message answered after a restart: the
    inbox keeps the file's name, never its bytes).
    """

    name: str
    mime: str = ""
    size: int | None = None
    fetch: Fetch | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _clean_fields(self)


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A chat message from any platform, as the core sees it.

    ``addressed`` says whether the message is for the bot (a DM, a mention, a reply to the bot, a
    message in a thread the bot takes part in); connectors may deliver messages that are not
    addressed so that plugins can see them, and the core answers only addressed ones.
    """

    platform: str
    channel: str
    user: str
    message_id: str
    text: str
    thread: str | None = None
    is_direct: bool = False
    addressed: bool = True
    user_name: str = ""
    is_admin: bool = False
    quote: Quote | None = None
    """The message this one replies to or quotes, if it is another message with text."""
    attachments: tuple[Attachment, ...] = ()
    """Files sent with the message, in the order the platform lists them."""

    def __post_init__(self) -> None:
        # Every text (and id) enters the core through here: clean it once, whatever the connector.
        _clean_fields(self)

    @property
    def destination(self) -> Destination:
        return Destination(
            channel=self.channel,
            thread=self.thread,
            reply_to=self.message_id,
            is_group=not self.is_direct,
            user=self.user,
        )


def conversation_key(message: IncomingMessage, channel_scope: Scope = Scope.PER_USER) -> ConversationKey:
    """Apply the scope policy.

    - a direct message is its own conversation, per user;
    - a thread (Slack thread, Discord thread, Telegram forum topic) is one shared conversation;
    - in a group channel each user has their own conversation unless the channel is ``shared``.
    """
    if message.is_direct:
        return ConversationKey(message.platform, message.channel, None, message.user)
    if message.thread is not None:
        return ConversationKey(message.platform, message.channel, message.thread, None)
    if channel_scope is Scope.SHARED:
        return ConversationKey(message.platform, message.channel, None, None)
    return ConversationKey(message.platform, message.channel, None, message.user)


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command as a connector received it; ``args`` is raw text or already-typed native options."""

    platform: str
    channel: str
    user: str
    name: str
    args: str | Mapping[str, object] = ""
    message_id: str = ""
    thread: str | None = None
    is_direct: bool = False
    user_name: str = ""
    is_admin: bool = False
    """The platform says the user administers this chat or server."""
    destination: Destination | None = None
    """Where answers go; connectors may carry a reply handle in it. Default: the channel/thread."""
    prefix: str = ""
    """What the platform puts before command names (Slack's ``PARLEY_SLACK__COMMAND_PREFIX``)."""

    def __post_init__(self) -> None:
        _clean_fields(self)
        if not isinstance(self.args, str):
            cleaned = {clean_text(key): clean_text(v) if isinstance(v, str) else v for key, v in self.args.items()}
            object.__setattr__(self, "args", cleaned)

    def as_message(self) -> IncomingMessage:
        text = self.args if isinstance(self.args, str) else " ".join(f"{k}={v}" for k, v in self.args.items())
        return IncomingMessage(
            platform=self.platform,
            channel=self.channel,
            user=self.user,
            message_id=self.message_id,
            text=f"/{self.name} {text}".strip(),
            thread=self.thread,
            is_direct=self.is_direct,
            user_name=self.user_name,
            is_admin=self.is_admin,
        )

    def reply_destination(self) -> Destination:
        if self.destination is not None:
            return self.destination
        return Destination(
            self.channel, self.thread, self.message_id or None, is_group=not self.is_direct, user=self.user
        )
