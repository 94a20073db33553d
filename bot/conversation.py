"""The platform-neutral conversation model.

Connectors turn each platform's events into these frozen dataclasses; the core never sees an SDK
object. :func:`conversation_key` is the one place that decides which messages share a history.
"""

from __future__ import annotations

import enum
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
    handle: object = field(default=None, compare=False, hash=False)
    """Opaque to the core: a connector's own reply handle (e.g. an interaction to answer)."""


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
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def destination(self) -> Destination:
        return Destination(
            channel=self.channel,
            thread=self.thread,
            reply_to=self.message_id,
            is_group=not self.is_direct,
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
