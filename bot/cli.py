"""The ``parley`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description="A self-hosted chat bot for a local LLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the bot with every configured connector")
    check = commands.add_parser(
        "check", help="check the settings, each platform's token, the engine and the web port, and say what to fix"
    )
    check.add_argument("--skip-engine", action="store_true", help="do not load the model (or reach the model server)")
    commands.add_parser(
        "slack-manifest", help="print the Slack app manifest (JSON) for these settings and the loaded plugins"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        from bot.main import run

        return run()
    if args.command == "check":
        from bot.main import check as run_check

        return run_check(skip_engine=args.skip_engine)
    if args.command == "slack-manifest":
        from bot.main import slack_manifest

        return slack_manifest()
    return 2


if __name__ == "__main__":
    sys.exit(main())
