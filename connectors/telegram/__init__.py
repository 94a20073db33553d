"""Telegram connector: python-telegram-bot, long polling, HTML rendered from the model's Markdown.

Started by :func:`bot.main.build_connectors` when ``PARLEY_TELEGRAM__TOKEN`` is set; only this
package imports ``telegram``.
"""

from connectors.telegram.connector import TelegramConnector

__all__ = ["TelegramConnector"]
