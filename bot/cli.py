"""The ``parley`` command."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description="A self-hosted chat bot for a local LLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the bot with every configured connector")
    commands.add_parser(
        "slack-manifest", help="print the Slack app manifest (JSON) for these settings and the loaded plugins"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        from bot.app import run

        return run()
    if args.command == "slack-manifest":
        return slack_manifest()
    return 2


def slack_manifest() -> int:
    """Print the manifest to paste into Slack (api.slack.com/apps → Create New App → From a manifest)."""
    from bot.errors import ConfigError
    from bot.loader import load_plugins
    from bot.plugin import Command
    from bot.settings import load_settings
    from connectors.slack.manifest import build_manifest

    try:
        settings = load_settings()
        loaded = load_plugins(settings)
        for problem in loaded.problems:
            print(f"parley: plugin skipped: {problem}", file=sys.stderr)
        found: dict[str, Command] = {}
        for plugin in loaded.plugins:  # as the core does: the first plugin to declare a name keeps it
            for command in plugin.router.commands:
                found.setdefault(command.name, command)
        manifest = build_manifest(settings.slack, list(found.values()))
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
