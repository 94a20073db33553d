"""Small text helpers shared by the connectors: mentions, whitespace, length limits."""

from __future__ import annotations

import re
from collections.abc import Iterable

ELLIPSIS = "…"
_SPACES = re.compile(r"[ \t]{2,}")


def squeeze_spaces(text: str) -> str:
    """Collapse runs of spaces and tabs (what removing a word leaves) and strip the ends; keep newlines."""
    return _SPACES.sub(" ", text).strip()


def strip_mentions(text: str, mention: re.Pattern[str]) -> str:
    """``text`` without the matches of ``mention`` (the bot's own mention syntax), tidied."""
    return squeeze_spaces(mention.sub("", text))


def cut_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` without the ``[start, end)`` spans (e.g. mention entities a platform marked), tidied."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    return squeeze_spaces(text)


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` characters, else cut to ``limit`` with an ellipsis as the last one."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def one_line(text: str, limit: int, fallback: str = "") -> str:
    """``text`` on one line (whitespace collapsed), ``fallback`` if blank, cut to ``limit``.

    What a platform shows as a command or option description.
    """
    return truncate(" ".join(text.split()) or fallback, limit)
