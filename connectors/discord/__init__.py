"""Discord connector (discord.py). The only package that imports ``discord``."""

from __future__ import annotations

from connectors.discord.connector import DiscordConnector

__all__ = ["DiscordConnector"]
