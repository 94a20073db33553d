"""Slack connector (slack-bolt, Socket Mode or HTTP events); the only package that imports slack_sdk."""

from connectors.slack.connector import EVENTS_PATH, SlackConnector

__all__ = ["EVENTS_PATH", "SlackConnector"]
