"""Parley's own channel: the chat page and HTTP API (aiohttp)."""

from connectors.web.server import WebServer

__all__ = ["WebServer"]
