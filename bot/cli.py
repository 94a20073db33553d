"""The ``parley`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    settings_doc = commands.add_parser(
        "settings-doc", help="print the README's settings reference, generated from the settings models"
    )
    settings_doc.add_argument("--write", action="store_true", help="rewrite the reference block in the README")
    settings_doc.add_argument("--readme", type=Path, default=Path("README.md"), help="default: ./README.md")
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
    if args.command == "settings-doc":
        return _settings_doc(write=args.write, readme=args.readme)
    return 2


def _settings_doc(*, write: bool, readme: Path) -> int:
    from bot import settings_doc

    if not write:
        print(settings_doc.reference(), end="")
        return 0
    try:
        changed = settings_doc.write_readme(readme)
    except (OSError, ValueError) as error:
        print(f"parley settings-doc: {readme}: {error}", file=sys.stderr)
        return 1
    print(f"{readme}: settings reference {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
