"""Slack slash command names: the core's commands as ``/<PARLEY_SLACK__COMMAND_PREFIX><name>``.

Slack has no registration call: the commands are declared in the app manifest
(:mod:`connectors.slack.manifest`), and an invocation becomes a request in
:func:`connectors.slack.inbound.to_command_request`.
"""

from __future__ import annotations


def command_name(slack_command: str, prefix: str) -> str:
    """The core's name for ``/<prefix><name>`` (a command without the prefix keeps its name)."""
    name = slack_command.strip().lstrip("/").lower()
    if prefix and name.startswith(prefix) and len(name) > len(prefix):
        return name[len(prefix) :]
    return name


def slack_command(name: str, prefix: str) -> str:
    """The Slack command for the core's command ``name``."""
    return f"/{prefix}{name}"
