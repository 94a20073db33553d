"""The Slack app manifest for Parley (``parley slack-manifest``): what an admin pastes into Slack.

A pure function of the Slack settings and the loaded commands. Scopes and events are the ones
the connector uses: it reads messages in DMs, channels, private channels and group DMs plus
mentions (``*:history``, ``app_mentions:read``), posts, edits and posts ephemerally
(``chat:write``), looks callers up for names and the admin flag (``users:read``) and takes slash
commands (``commands``). With an app token the app uses Socket Mode and needs no URL; otherwise
Slack posts events and commands to ``<PARLEY_SLACK__PUBLIC_URL>/slack/events``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.command import Command
from bot.errors import ConfigError
from bot.settings import SlackSettings
from connectors.slack.commands import slack_command

APP_NAME = "Parley"
DESCRIPTION = "Chat with a local language model: mention me, message me, or use my slash commands."
EVENTS_PATH = "/slack/events"
PLACEHOLDER_URL = "https://parley.example.com"
"""Shown when PARLEY_SLACK__PUBLIC_URL is unset in HTTP mode: the admin replaces it before pasting."""
MAX_COMMAND = 32
"""Slack's limit on a slash command's length, the slash included."""

BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "commands",
    "files:read",
    "groups:history",
    "im:history",
    "mpim:history",
    "users:read",
)
BOT_EVENTS = ("app_mention", "message.channels", "message.groups", "message.im", "message.mpim")


def usage_hint(command: Command) -> str:
    """The parameters part of the usage (``<prompt>``), as Slack shows it after the command."""
    return " ".join(param.placeholder() for param in command.params)


def slash_commands(settings: SlackSettings, commands: Sequence[Command], url: str | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for command in sorted(commands, key=lambda c: c.name):
        name = slack_command(command.name, settings.command_prefix)
        if len(name) > MAX_COMMAND:
            raise ConfigError(
                f"Slack command {name} is longer than {MAX_COMMAND} characters; shorten PARLEY_SLACK__COMMAND_PREFIX"
            )
        entry: dict[str, Any] = {"command": name, "description": command.description, "should_escape": False}
        if hint := usage_hint(command):
            entry["usage_hint"] = hint
        if url is not None:
            entry["url"] = url
        entries.append(entry)
    return entries


def build_manifest(settings: SlackSettings, commands: Sequence[Command]) -> dict[str, Any]:
    """The manifest as a JSON-ready dict (Slack accepts JSON as well as YAML)."""
    socket_mode = settings.app_token is not None
    url = None if socket_mode else f"{(settings.public_url or PLACEHOLDER_URL).rstrip('/')}{EVENTS_PATH}"
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    if url is not None:
        events = {"request_url": url} | events
    features: dict[str, Any] = {
        "app_home": {"home_tab_enabled": False, "messages_tab_enabled": True, "messages_tab_read_only_enabled": False},
        "bot_user": {"display_name": APP_NAME, "always_online": True},
    }
    if commands:
        features["slash_commands"] = slash_commands(settings, commands, url)
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {"name": APP_NAME, "description": DESCRIPTION},
        "features": features,
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": events,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }
