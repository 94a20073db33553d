"""Where discord.py connects: Discord itself unless the settings point it elsewhere.

discord.py has no constructor option for its endpoints; they are two documented class attributes,
so they are process-global. :func:`point_at` is the one place that sets them, and it does nothing
when neither ``PARLEY_DISCORD__API_BASE`` nor ``PARLEY_DISCORD__GATEWAY_URL`` is set.
:func:`restore` puts back what :func:`point_at` found (tests run several fakes in one process).
"""

from __future__ import annotations

from dataclasses import dataclass

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.settings import DiscordSettings


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The REST base (``.../api/v10``) and the gateway URL discord.py uses."""

    api_base: str
    gateway: yarl.URL


def current() -> Endpoints:
    return Endpoints(Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)


def point_at(settings: DiscordSettings) -> Endpoints:
    """Apply the configured endpoints; return the previous ones."""
    previous = current()
    if settings.api_base:
        # Route.BASE has no trailing slash: routes are appended as "/channels/...".
        Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
    return previous


def restore(endpoints: Endpoints) -> None:
    Route.BASE = endpoints.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = endpoints.gateway
