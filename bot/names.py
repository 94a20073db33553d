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

Each labelled turn also carries the speaker as a name field (:meth:`Speakers.field`), for
OpenAI-compatible servers that take one: the label made to fit ``^[a-zA-Z0-9_-]{1,64}$`` and
unique within the prompt. Servers that ignore it still read the label in the text.

Direct messages and per-user conversations have one speaker and are left exactly as written.
"""

from __future__ import annotations

import re
import unicodedata

NAME_LIMIT = 40
SHARED_NOTE = (
    "Several people write in this conversation. Each of their messages starts with the writer's name in "
    "brackets, like “[Ada]: ”; address them by name when it helps."
)
"""Appended to the system prompt of shared conversations, so the model reads the labels."""

_LINE_START_BRACKET = re.compile(r"^(\s*)\[", re.MULTILINE)
_NOT_IN_NAMES = re.compile(r"[\[\]\x00-\x1f\x7f\u2028\u2029]+")
_NOT_IN_FIELDS = re.compile(r"[^a-zA-Z0-9_-]+")
FIELD_LIMIT = 64
"""OpenAI's limit on a message's ``name``."""
_UNDECOMPOSED = str.maketrans(
    {"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE"}
    | {"œ": "oe", "Þ": "Th", "þ": "th", "ı": "i"}
)
"""Latin letters that NFKD leaves whole, spelled in ASCII."""


def field_name(label: str) -> str:
    """``label`` as OpenAI's ``name`` takes it: ASCII letters, digits, ``_`` and ``-`` (accents
    dropped, anything else one ``_``), at most :data:`FIELD_LIMIT`; ``""`` if nothing is left."""
    ascii_ = unicodedata.normalize("NFKD", label.translate(_UNDECOMPOSED)).encode("ascii", "ignore").decode()
    return _NOT_IN_FIELDS.sub("_", ascii_).strip("_")[:FIELD_LIMIT].rstrip("_")


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
        self._fields: dict[str, str] = {}
        self._fields_taken: set[str] = set()

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

    def field(self, author: str, name: str) -> str:
        """``author``'s name field (:func:`field_name` of their label), unique in the conversation:
        ``Bob_2`` if another speaker's label already gave ``Bob``, ``speaker_N`` if no ASCII is left."""
        found = self._fields.get(author)
        if found is not None:
            return found
        base = field_name(self.label(author, name)) or f"speaker_{len(self._fields) + 1}"
        candidate, number = base, 2
        while candidate.casefold() in self._fields_taken:
            suffix = f"_{number}"
            candidate, number = base[: FIELD_LIMIT - len(suffix)] + suffix, number + 1
        self._fields[author] = candidate
        self._fields_taken.add(candidate.casefold())
        return candidate

    def say(self, author: str, name: str, text: str, quote: str = "") -> str:
        """The content of a user turn: ``[Label]: text``, with the ``quote`` line (:func:`quoting`)
        before the text; a turn without an author (stored before names were kept) has no label,
        and its text is escaped all the same."""
        body = f"{quote}\n{escape(text)}" if quote else escape(text)
        if not author:
            return body
        return f"[{self.label(author, name)}]: {body}"
