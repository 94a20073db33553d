"""``parley check`` for Slack: the tokens against the Web API, through slack_sdk.

``auth.test`` says who the bot is and in which workspace; its ``x-oauth-scopes`` header lists the
token's scopes, compared with the manifest's (:data:`connectors.slack.manifest.BOT_SCOPES`). With an
app token (Socket Mode) ``apps.connections.open`` shows that it works (the URL it returns is not
used, and expires); without one (HTTP mode) the signing secret and the web server must be set.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.report import Finding, describe, masked, problem, warning
from bot.settings import SlackSettings
from connectors.slack.connector import api_base
from connectors.slack.manifest import BOT_SCOPES, EVENTS_PATH

SUBJECT = "slack"
TIMEOUT = 10
BOT_FIX = "PARLEY_SLACK__BOT_TOKEN: the Bot User OAuth Token (xoxb-…) from your app's OAuth & Permissions page"
APP_FIX = (
    "PARLEY_SLACK__APP_TOKEN: an app-level token (xapp-…) with connections:write, from Basic Information → "
    "App-Level Tokens; Socket Mode must be on (or unset it to receive events over HTTP)"
)
NETWORK_FIX = "check the network, or PARLEY_SLACK__API_URL if it is set"


def _error(exc: SlackApiError) -> str:
    data = exc.response.data
    return str(data.get("error", "")) if isinstance(data, dict) else f"HTTP {exc.response.status_code}"


async def check(settings: SlackSettings, *, web_enabled: bool) -> list[Finding]:
    if settings.bot_token is None:
        if settings.app_token is not None or settings.signing_secret is not None:
            return [warning(SUBJECT, "Slack credentials are set but no bot token: Slack stays off", BOT_FIX)]
        return []
    url = api_base(settings.api_url)
    token = settings.bot_token.get_secret_value()
    try:
        answer = await AsyncWebClient(token=token, base_url=url, timeout=TIMEOUT).auth_test()
    except SlackApiError as exc:
        return [problem(SUBJECT, f"auth.test refused the bot token ({masked(token)}): {_error(exc)}", BOT_FIX)]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return [problem(SUBJECT, f"cannot reach the Web API at {url}: {describe(exc)}", NETWORK_FIX)]
    who = f"@{answer.get('user')} ({answer.get('user_id')}) in {answer.get('team')} ({answer.get('team_id')})"
    if not answer.get("bot_id"):
        return [problem(SUBJECT, f"{who}: this is not a bot token ({masked(token)})", BOT_FIX)]
    found = [Finding(SUBJECT, True, f"bot {who}, token {masked(token)}"), _scopes(answer.headers)]
    if settings.app_token is not None:
        found.append(await _app_token(settings.app_token.get_secret_value(), url))
    else:
        found.append(_http_mode(settings, web_enabled))
    return found


def _scopes(headers: dict[str, Any]) -> Finding:
    header = next((value for name, value in headers.items() if name.lower() == "x-oauth-scopes"), None)
    if header is None:
        return warning(SUBJECT, "Slack did not report the token's scopes (no x-oauth-scopes header)")
    granted = {scope.strip() for scope in header.split(",") if scope.strip()}
    missing = [scope for scope in BOT_SCOPES if scope not in granted]
    if missing:
        return problem(
            SUBJECT,
            f"the bot token lacks scope{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            "add them under OAuth & Permissions → Bot Token Scopes (or recreate the app from "
            "`parley slack-manifest`), reinstall the app, and set the new PARLEY_SLACK__BOT_TOKEN",
        )
    return Finding(SUBJECT, True, f"scopes: all {len(BOT_SCOPES)} that Parley needs")


async def _app_token(app_token: str, url: str) -> Finding:
    try:
        await AsyncWebClient(base_url=url, timeout=TIMEOUT).apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        detail = f"apps.connections.open refused the app token ({masked(app_token)}): {_error(exc)}"
        return problem(SUBJECT, detail, APP_FIX)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return problem(SUBJECT, f"cannot reach the Web API at {url}: {describe(exc)}", NETWORK_FIX)
    return Finding(SUBJECT, True, f"Socket Mode: the app token ({masked(app_token)}) opens a connection")


def _http_mode(settings: SlackSettings, web_enabled: bool) -> Finding:
    if settings.signing_secret is None:
        return problem(
            SUBJECT,
            "HTTP mode (no app token) without a signing secret: requests from Slack cannot be verified",
            "PARLEY_SLACK__SIGNING_SECRET: Basic Information → App Credentials → Signing Secret "
            "(or set PARLEY_SLACK__APP_TOKEN for Socket Mode)",
        )
    if not web_enabled:
        return problem(
            SUBJECT,
            f"HTTP mode (no app token) needs the web server for {EVENTS_PATH}, and it is off",
            "PARLEY_WEB__ENABLED=true, or PARLEY_SLACK__APP_TOKEN for Socket Mode",
        )
    where = f"{settings.public_url.rstrip('/')}{EVENTS_PATH}" if settings.public_url else f"<public URL>{EVENTS_PATH}"
    return Finding(SUBJECT, True, f"HTTP mode: signing secret set; Slack must reach {where}")
