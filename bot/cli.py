"""The ``parley`` command."""

from __future__ import annotations

import argparse
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
        from bot.main import run

        return run()
    if args.command == "slack-manifest":
        from bot.main import slack_manifest

        return slack_manifest()
    return 2


if __name__ == "__main__":
    sys.exit(main())
