"""Abuse controls as message middleware: allow and block lists, and a per-user rate limit.

Settings are ``PARLEY_LIMITS__…`` (see README). The rate limit is a token bucket per user:
``BURST`` messages at once, refilled at ``MESSAGES_PER_MINUTE``. A limited user is told once when
they can write again; further messages while limited are dropped silently. Admins are exempt.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.conversation import IncomingMessage
from bot.plugin import Deny, Plugin, Router

if TYPE_CHECKING:
    from bot.chat import ChatService


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


@dataclass
class Limits:
    """The state of one app's limits (a plugin instance per app, not module globals)."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    async def check(self, message: IncomingMessage, chat: ChatService) -> Deny | None:
        limits = chat.settings.limits
        user = f"{message.platform}:{message.user}"
        channel = f"{message.platform}:{message.channel}"
        if message.is_admin or user in chat.settings.admins:
            return None
        if user in limits.block_users or channel in limits.block_channels:
            return Deny()
        if limits.allow_users and user not in limits.allow_users:
            return Deny()
        if limits.allow_channels and channel not in limits.allow_channels and not message.is_direct:
            return Deny()
        if limits.messages_per_minute <= 0:
            return None
        return self._spend(user, limits.messages_per_minute / 60.0, limits.burst)

    def _spend(self, user: str, rate: float, burst: int) -> Deny | None:
        now = asyncio.get_running_loop().time()
        bucket = self.buckets.get(user)
        if bucket is None:
            bucket = self.buckets[user] = _Bucket(tokens=float(burst), updated=now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return None
        if bucket.warned:
            return Deny()
        bucket.warned = True
        wait = math.ceil((1.0 - bucket.tokens) / rate)
        return Deny(f"You are sending messages too fast. You can write again in {wait} s.")


def plugin() -> Plugin:
    """A fresh plugin (and fresh buckets) for each app."""
    limits = Limits()
    router = Router()
    router.before_message(limits.check)
    return Plugin(name="limits", description="Rate limits, allow and block lists", version="1.0", router=router)
