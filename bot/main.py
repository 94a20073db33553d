"""The composition root: the one module that builds concrete engines and connectors from settings.

Everything else depends on the core's contracts (:class:`bot.engine.Engine`,
:class:`bot.connector.Connector`, :class:`bot.connector.WebTransport`); only this module imports
``engine.*`` and ``connectors.*``, each backend or platform package only when the settings use it
(``tests/test_architecture.py`` holds this).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

from bot.app import Parley
from bot.command import Command
from bot.connector import Connector, HttpRoutes
from bot.engine import Engine
from bot.errors import ConfigError, ParleyError
from bot.loader import load_plugins
from bot.logs import configure_logging, secrets_of
from bot.models import EngineFactory
from bot.report import Finding, bounded, exit_code, format_report, problem, redact, warning
from bot.settings import EngineSettings, Settings, load_settings
from bot.store import Store

log = logging.getLogger("parley")


def build_engine(settings: EngineSettings) -> Engine:
    """The configured engine, not started."""
    if settings.backend == "openai":
        from engine.openai import OpenAIEngine

        return OpenAIEngine(settings)
    from engine.local import LocalEngine

    return LocalEngine(settings)


def build_connectors(settings: Settings, routes: HttpRoutes | None) -> list[Connector]:
    """One connector per platform whose credentials are configured."""
    found: list[Connector] = []
    if settings.telegram.token is not None:
        from connectors.telegram import TelegramConnector

        found.append(
            TelegramConnector(settings.telegram, admins=settings.admins, max_file_bytes=settings.attachments.max_bytes)
        )
    if settings.discord.token is not None:
        from connectors.discord import DiscordConnector

        found.append(DiscordConnector(settings.discord, max_file_bytes=settings.attachments.max_bytes))
    if settings.slack.bot_token is not None:
        from connectors.slack import SlackConnector

        found.append(SlackConnector(settings.slack, routes, max_file_bytes=settings.attachments.max_bytes))
    return found


def build_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    store: Store | None = None,
    factory: EngineFactory = build_engine,
) -> Parley:
    """The whole bot for ``settings``; tests may pass their own ``engine`` (the default model's), ``store``,
    or ``factory`` (the other models' engines, built when first used)."""
    default = engine if engine is not None else build_engine(settings.engine)
    app = Parley(settings, default, store=store, factory=factory)
    web = None
    if settings.web.enabled:
        from connectors.web import WebServer

        web = WebServer(settings.web, app)
    app.attach(web=web, connectors=build_connectors(settings, web))
    return app


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_app(settings):
        log.info("Parley is up; press Ctrl+C to stop")
        await stop.wait()
        log.info("shutting down: no new messages; letting running replies finish")


def run() -> int:
    """Entry point of ``parley run``: exit code 0 on a clean stop, 2 on bad settings, 1 on failure."""
    configure_logging()
    try:
        settings = load_settings()
        configure_logging(settings)
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


PLATFORM_TIMEOUT = 15.0
ENGINE_TIMEOUT = 300.0
"""Loading a large model from a slow disk takes minutes."""


async def checks(settings: Settings, *, skip_engine: bool = False) -> list[Finding]:
    """Every check ``settings`` call for, run at once, each bounded; findings in a fixed order."""
    from connectors.web.check import check as web_check

    jobs = [bounded("web", web_check(settings.web), PLATFORM_TIMEOUT, "PARLEY_WEB__HOST, PARLEY_WEB__PORT")]
    if not skip_engine:
        jobs.append(_model_checks(settings))
    if settings.telegram.token is not None:
        from connectors.telegram.check import check as telegram_check

        fix = "check the network, or PARLEY_TELEGRAM__BASE_URL"
        jobs.append(bounded("telegram", telegram_check(settings.telegram), PLATFORM_TIMEOUT, fix))
    if settings.discord.token is not None:
        from connectors.discord.check import check as discord_check

        fix = "check the network, or PARLEY_DISCORD__API_BASE"
        jobs.append(bounded("discord", discord_check(settings.discord), PLATFORM_TIMEOUT, fix))
    slack = settings.slack
    if slack.bot_token is not None or slack.app_token is not None or slack.signing_secret is not None:
        from connectors.slack.check import check as slack_check

        fix = "check the network, or PARLEY_SLACK__API_URL"
        jobs.append(bounded("slack", slack_check(slack, web_enabled=settings.web.enabled), PLATFORM_TIMEOUT, fix))
    found = [Finding("settings", True, "valid")]
    for result in await asyncio.gather(*jobs):
        found.extend(result)
    if not any(token is not None for token in (settings.telegram.token, settings.discord.token, slack.bot_token)):
        fix = "set PARLEY_TELEGRAM__TOKEN, PARLEY_DISCORD__TOKEN or PARLEY_SLACK__BOT_TOKEN"
        found.append(warning("platforms", "none configured: only the web chat and the HTTP API answer", fix))
    return found


async def _model_checks(settings: Settings) -> list[Finding]:
    """The default model, then each of ``PARLEY_MODELS``, one after the other (as ``parley run`` loads local
    models: one at a time), each bounded."""
    from engine.check import check as engine_check

    engine = engine_check(build_engine(settings.engine), settings.engine, settings.system_prompt)
    found = await bounded("engine", engine, ENGINE_TIMEOUT, "PARLEY_ENGINE__MODEL_PATH or PARLEY_ENGINE__BASE_URL")
    for name, model in settings.models.items():
        subject, prefix = f"model {name}", f"PARLEY_MODELS__{name.upper()}__"
        job = engine_check(build_engine(model), model, settings.system_prompt, subject=subject, prefix=prefix)
        found += await bounded(subject, job, ENGINE_TIMEOUT, f"{prefix}MODEL_PATH or {prefix}BASE_URL")
    return found


def check(*, skip_engine: bool = False) -> int:
    """Entry point of ``parley check``: print the report; exit code 0 all good, 1 something to fix, 2 bad settings."""
    ascii_only = not _can_print("✓✗")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(format_report([problem("settings", str(exc))], ascii_only=ascii_only))
        return 2
    root = logging.getLogger()
    level = root.level  # put back afterwards: tests call this in-process
    configure_logging(settings)
    if settings.log_level != "DEBUG":  # the report is the output; libraries' INFO lines are noise here
        root.setLevel(logging.WARNING)
    try:
        found = asyncio.run(checks(settings, skip_engine=skip_engine))
    finally:
        root.setLevel(level)
    print(redact(format_report(found, ascii_only=ascii_only), secrets_of(settings)))
    return exit_code(found)


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def slack_manifest() -> int:
    """Print the manifest to paste into Slack (api.slack.com/apps → Create New App → From a manifest)."""
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
