"""Who said what: the speakers' names on the user turns of a shared conversation.

In a shared conversation (a thread, or a channel set to ``shared``) several people talk to the
bot, so each user turn reaches the model as ``[Name]: text``: plain text in the message content,
which every chat template keeps. The label is the only part of the content the core writes, and
users cannot forge one:

- at the start of any line of a user's own text, ``[`` is escaped as ``\\[``, so the only
  unescaped ``[…]:`` at a line start is the label the core put there;
- names are the platform's display names with brackets, line breaks and control characters
  removed, at most :data:`NAME_LIMIT` characters;
- labels are given per conversation, in order of first appearance and keyed by user id: a second
  person showing the same display name (or one who renamed themselves after another speaker) gets
  ``Name (2)``, so two people never share a label.

Direct messages and per-user conversations have one speaker and are left exactly as written.
"""

from __future__ import annotations

import re

NAME_LIMIT = 40
SHARED_NOTE = (
    "Several people write in this conversation. Each of their messages starts with the writer's name in "
    "brackets, like “[Ada]: ”; address them by name when it helps."
)
"""Appended to the system prompt of shared conversations, so the model reads the labels."""

_LINE_START_BRACKET = re.compile(r"^(\s*)\[", re.MULTILINE)
_NOT_IN_NAMES = re.compile(r"[\[\]\x00-\x1f\x7f\u2028\u2029]+")


def clean_name(name: str) -> str:
    """``name`` fit for a label: no brackets or control characters, one line, spaces collapsed, bounded."""
    name = " ".join(_NOT_IN_NAMES.sub(" ", name).split())
    return name[:NAME_LIMIT].rstrip()


def quoting(name: str, text: str, limit: int) -> str:
    """The line that puts a quoted message before a user's text: ``[replying to Name: "text"]``.

    It starts with ``[`` at a line start, which a user's own text never does in a shared
    conversation (:func:`escape`); the quoted text is one line, at most ``limit`` characters.
    """
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return f'[replying to {clean_name(name) or "someone"}: "{text}"]'


def escape(text: str) -> str:
    """A user's own text, with a ``[`` that starts a line escaped so it cannot pose as a label."""
    return _LINE_START_BRACKET.sub(r"\1\\[", text)


class Speakers:
    """The labels of one shared conversation's speakers, keyed by user id, unique within it."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}
        self._taken: set[str] = set()

    def label(self, author: str, name: str) -> str:
        """``author``'s label: their first-seen display name, numbered if another speaker has it."""
        found = self._labels.get(author)
        if found is not None:
            return found
        base = clean_name(name) or clean_name(author) or "someone"
        label, number = base, 2
        while label.casefold() in self._taken:
            label, number = f"{base} ({number})", number + 1
        self._labels[author] = label
        self._taken.add(label.casefold())
        return label

    def say(self, author: str, name: str, text: str, quote: str = "") -> str:
        """The content of a user turn: ``[Label]: text``, with the ``quote`` line (:func:`quoting`)
        before the text; a turn without an author (stored before names were kept) has no label,
        and its text is escaped all the same."""
        body = f"{quote}\n{escape(text)}" if quote else escape(text)
        if not author:
            return body
        return f"[{self.label(author, name)}]: {body}"
