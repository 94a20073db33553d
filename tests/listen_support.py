"""Helpers for listen-mode tests: what the ``heard`` table holds."""

from __future__ import annotations

import sqlite3

from bot.app import Parley


def heard_rows(app: Parley) -> list[tuple[str, str, str]]:
    """``(user, user_name, text)`` of every kept message, oldest first."""
    with sqlite3.connect(app.settings.db_path) as db:
        return db.execute("SELECT user, user_name, text FROM heard ORDER BY id").fetchall()
