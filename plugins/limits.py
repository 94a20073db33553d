"""Abuse controls as message middleware: allow and block lists, and a per-user rate limit.

Settings are ``PARLEY_LIMITS__…`` (see README). The rate limit is a token bucket per user:
``BURST`` messages at once, refilled at ``MESSAGES_PER_MINUTE``. A limited user is told once when
they can write again; further messages while limited are dropped silently. Admins are exempt.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from bot.plugin import IncomingMessage, MessageContext, Next, Plugin, Router


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


@dataclass
class Limits:
    """The state of one app's limits (a plugin instance per app, not module globals)."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    async def __call__(self, handler: Next, message: IncomingMessage, ctx: MessageContext) -> str | None:
        """Middleware: go on, or stop the message (telling the user once when they are too fast)."""
        allowed, note = self.check(message, ctx)
        if not allowed:
            refused = ctx.metrics.counter(
                "parley_limits_refused", "Messages and commands the limits plugin stopped", ["platform"]
            )
            refused.labels(message.platform).inc()
            if note:
                await ctx.tell(note)
            return None
        return await handler(message)

    def check(self, message: IncomingMessage, ctx: MessageContext) -> tuple[bool, str | None]:
        """Whether ``message`` may go on, and what to tell its sender if not."""
        limits = ctx.settings.limits
        user = f"{message.platform}:{message.user}"
        channel = f"{message.platform}:{message.channel}"
        if ctx.is_admin:
            return True, None
        if user in limits.block_users or channel in limits.block_channels:
            return False, None
        if limits.allow_users and user not in limits.allow_users:
            return False, None
        if limits.allow_channels and channel not in limits.allow_channels and not message.is_direct:
            return False, None
        if limits.messages_per_minute <= 0 or not message.addressed:
            return True, None  # chatter a listening channel keeps is not a request: it spends nothing
        return self._spend(user, limits.messages_per_minute / 60.0, limits.burst)

    def _spend(self, user: str, rate: float, burst: int) -> tuple[bool, str | None]:
        now = asyncio.get_running_loop().time()
        bucket = self.buckets.get(user)
        if bucket is None:
            bucket = self.buckets[user] = _Bucket(tokens=float(burst), updated=now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return True, None
        if bucket.warned:
            return False, None
        bucket.warned = True
        wait = math.ceil((1.0 - bucket.tokens) / rate)
        return False, f"You are sending messages too fast. You can write again in {wait} s."


def plugin() -> Plugin:
    """A fresh plugin (and fresh buckets) for each app."""
    limits = Limits()
    router = Router()
    router.middleware(limits)
    return Plugin(name="limits", description="Rate limits, allow and block lists", version="1.0", router=router)
