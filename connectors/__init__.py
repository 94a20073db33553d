"""Platform connectors. Each subpackage imports its platform SDK; nothing else does.

:func:`build_connectors` creates the connectors whose credentials are configured, importing each
SDK only when its platform is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.connector import Connector
    from bot.settings import Settings
    from connectors.web.server import WebServer


def build_connectors(settings: Settings, web: WebServer | None) -> list[Connector]:
    """The platform connectors to run, one per configured platform."""
    found: list[Connector] = []
    if settings.telegram.token is not None:
        from connectors.telegram import TelegramConnector

        found.append(TelegramConnector(settings.telegram, admins=settings.admins))
    if settings.discord.token is not None:
        from connectors.discord import DiscordConnector

        found.append(DiscordConnector(settings.discord))
    if settings.slack.bot_token is not None:
        from connectors.slack import SlackConnector

        found.append(SlackConnector(settings.slack, web))
    return found
