"""The ``parley`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description="A self-hosted chat bot for a local LLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the bot with every configured connector")
    args = parser.parse_args(argv)
    if args.command == "run":
        from bot.app import run

        return run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
