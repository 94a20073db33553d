"""Slack connector (slack-bolt, Socket Mode or HTTP events); the only package that imports slack_sdk."""

from connectors.slack.connector import SlackConnector
from connectors.slack.manifest import EVENTS_PATH

__all__ = ["EVENTS_PATH", "SlackConnector"]
