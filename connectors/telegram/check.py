"""``parley check`` for Telegram: the token against the Bot API, through PTB's ``Bot``.

``getMe`` says who the bot is and two BotFather switches: whether it may join groups, and whether
privacy mode is off (``can_read_all_group_messages``); with privacy mode on, Telegram delivers
only some group messages to a bot. ``getWebhookInfo`` tells whether a webhook is set: Telegram
does not answer ``getUpdates`` while one is, and ``parley run`` deletes it when polling starts,
which cuts off whatever else receives this bot's updates.
"""

from __future__ import annotations

from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from bot.report import Finding, describe, masked, problem, warning
from bot.settings import TelegramSettings
from connectors.telegram.connector import DEFAULT_API, api_urls

SUBJECT = "telegram"
REJECTED_FIX = "PARLEY_TELEGRAM__TOKEN: copy the bot's token from @BotFather (/mybots → API Token)"


async def check(settings: TelegramSettings) -> list[Finding]:
    if settings.token is None:
        return []
    token = settings.token.get_secret_value()
    base, files = api_urls(settings)
    where = (settings.base_url or DEFAULT_API).rstrip("/")
    bot = Bot(token, base_url=base, base_file_url=files)
    try:
        async with bot:  # initialize() is getMe
            me = bot.bot
            webhook = await bot.get_webhook_info()
    except InvalidToken:  # its text holds the token
        return [problem(SUBJECT, f"the Bot API at {where} rejected the token ({masked(token)})", REJECTED_FIX)]
    except TelegramError as exc:
        fix = "check the network, or PARLEY_TELEGRAM__BASE_URL if you use your own Bot API server"
        return [problem(SUBJECT, f"cannot reach the Bot API at {where}: {describe(exc)}", fix)]
    found = [Finding(SUBJECT, True, f"@{me.username} (id {me.id}), token {masked(token)}")]
    if webhook.url:
        found.append(
            problem(
                SUBJECT,
                f"a webhook is set ({webhook.url}): Telegram sends this bot's updates there, not to getUpdates, "
                "and `parley run` would delete it",
                "give Parley a bot of its own (PARLEY_TELEGRAM__TOKEN), or remove the webhook if nothing uses it "
                "(Bot API deleteWebhook)",
            )
        )
    if not me.can_join_groups:
        found.append(
            warning(SUBJECT, "the bot cannot be added to groups", "@BotFather → /setjoingroups → Enable, if it should")
        )
    if not me.can_read_all_group_messages:
        found.append(
            warning(
                SUBJECT,
                "privacy mode is on: in groups Telegram delivers only commands and replies to the bot's messages, "
                "so mentions of it may not arrive",
                "@BotFather → /setprivacy → Disable, then remove and re-add the bot to its groups "
                "(or make it an admin of each group)",
            )
        )
    return found
