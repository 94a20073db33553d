"""``parley check`` for Discord: the token against the REST API, through discord.py's HTTP client.

``GET /users/@me`` says who the bot is (a 401 is a wrong token); ``GET /oauth2/applications/@me``
gives the application and its ``flags``, which tell whether the privileged Message Content intent
is enabled in the Developer Portal. Parley asks for it (see ``connectors.discord.connector.intents``):
without it Discord refuses the gateway connection. No gateway connection is made here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import discord
from discord.http import HTTPClient

from bot.report import Finding, describe, masked, problem
from bot.settings import DiscordSettings
from connectors.discord import endpoints

SUBJECT = "discord"
GATEWAY_MESSAGE_CONTENT = 1 << 19
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 18
"""The intent is on for a bot in fewer than 100 servers that is not yet verified for it."""
INVITE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 38)
"""View Channels, Send Messages, Read Message History, Send Messages in Threads."""
REJECTED_FIX = "PARLEY_DISCORD__TOKEN: Developer Portal → your application → Bot → Reset Token, and copy it"


def has_message_content(flags: int) -> bool:
    return bool(flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED))


def invite_url(application_id: str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}"
    )


async def check(settings: DiscordSettings) -> list[Finding]:
    if settings.token is None:
        return []
    token = settings.token.get_secret_value()
    previous = endpoints.point_at(settings)  # process-global, as for the connector; put back below
    http = HTTPClient(asyncio.get_running_loop(), max_ratelimit_timeout=settings.rate_limit_wait)
    where = endpoints.current().api_base
    try:
        me: dict[str, Any] = dict(await http.static_login(token))
        application: dict[str, Any] = dict(await http.application_info())
    except discord.LoginFailure:
        return [problem(SUBJECT, f"Discord rejected the token ({masked(token)})", REJECTED_FIX)]
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        fix = "check the network, or PARLEY_DISCORD__API_BASE if it is set"
        return [problem(SUBJECT, f"cannot reach the API at {where}: {describe(exc)}", fix)]
    finally:
        await http.close()
        endpoints.restore(previous)
    name = me.get("username", "?")
    found = [
        Finding(SUBJECT, True, f"{name} (id {me.get('id')}), token {masked(token)}"),
        Finding(
            SUBJECT,
            True,
            f"application {application.get('name', '?')} (id {application.get('id')}); "
            f"invite: {invite_url(str(application.get('id')))}",
        ),
    ]
    if not has_message_content(int(application.get("flags") or 0)):
        found.append(
            problem(
                SUBJECT,
                "the Message Content intent is off: Discord refuses the connection Parley asks for, "
                "and without the intent the text of messages would be blank",
                "Developer Portal → your application → Bot → Privileged Gateway Intents → "
                "turn on Message Content Intent, and save",
            )
        )
    return found
