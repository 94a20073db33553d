"""Files sent with messages: which are read, how much, and how they reach the model.

:func:`read_attachments` takes a message's :class:`~bot.conversation.Attachment` list and returns a
:class:`Reading`: the text of each text-like file and PDF, the images (for a vision-capable engine)
and one note per file that was not read, saying which and why. Nothing is written to disk: a file
is downloaded into memory (at most ``max_bytes``; a larger declared size is refused before the
download starts, and a download stops once it passes the limit), read, and dropped.

- **text**: a ``text/*`` MIME type, a known textual ``application/*`` type (JSON, XML, YAML, …) or a
  known extension (``.md``, ``.py``, ``.csv``, …); decoded as UTF-8 (a UTF-16 BOM is honoured) with
  undecodable bytes replaced; a file with NUL bytes is binary and is not read.
- **pdf**: its text layer, page by page, through ``pypdf`` in a child process that is killed after
  ``PDF_SECONDS`` (:mod:`bot.pdftext`).
- **image**: PNG, JPEG, GIF or WebP, checked by its first bytes; only a vision engine gets it.

Each text is cut at ``max_chars``; :meth:`Reading.shrink` cuts further so the turn fits the
context window. :meth:`Reading.section` renders the files as labelled, fenced blocks that follow
the user's text in the stored turn, so later turns still see them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from bot.conversation import Attachment, clean_text
from bot.engine import Image
from bot.errors import FileTooLarge, ParleyError
from bot.pdftext import PdfUnreadable, read_pdf
from bot.settings import AttachmentSettings

log = logging.getLogger(__name__)

PDF_SECONDS = 20.0
"""A PDF whose text takes longer than this to extract is given up (a hostile or huge file)."""
NAME_LIMIT = 100
TEXT_MIMES = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-shellscript",
        "application/sql",
        "application/x-python",
        "application/x-python-code",
        "application/csv",
        "application/x-tex",
        "application/x-httpd-php",
    }
)
TEXT_EXTENSIONS = frozenset(
    {
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".rst",
        ".adoc",
        ".org",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".ndjson",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".conf",
        ".env",
        ".log",
        ".xml",
        ".html",
        ".htm",
        ".css",
        ".scss",
        ".svg",
        ".tex",
        ".py",
        ".pyi",
        ".js",
        ".mjs",
        ".cjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".java",
        ".kt",
        ".kts",
        ".scala",
        ".go",
        ".rs",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".cxx",
        ".hpp",
        ".hh",
        ".cs",
        ".fs",
        ".swift",
        ".m",
        ".mm",
        ".rb",
        ".php",
        ".pl",
        ".pm",
        ".lua",
        ".r",
        ".jl",
        ".hs",
        ".ml",
        ".mli",
        ".ex",
        ".exs",
        ".erl",
        ".clj",
        ".dart",
        ".sh",
        ".bash",
        ".zsh",
        ".fish",
        ".ps1",
        ".bat",
        ".sql",
        ".graphql",
        ".proto",
        ".gradle",
        ".cmake",
        ".mk",
        ".dockerfile",
        ".diff",
        ".patch",
        ".vue",
        ".svelte",
        ".nix",
        ".tf",
        ".hcl",
        ".ipynb",
    }
)
TEXT_NAMES = frozenset({"makefile", "dockerfile", "readme", "license", "changelog", "gemfile", "procfile"})
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
GENERIC_MIMES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})
"""MIME types that say nothing, so the extension decides; any other declared type wins over it."""
KIND_WORDS = {"text": "text", "pdf": "PDF", "image": "image"}
NO_VISION = "🖼️ This model can't see images; I read your text only"


class Unreadable(Exception):
    """A file that is not read; the message says why, in words for the user."""


def kind_of(file: Attachment) -> str | None:
    """``text``, ``pdf`` or ``image`` by MIME type, or by extension when the type is generic (or
    missing); ``None`` for anything else."""
    mime = file.mime.split(";", maxsplit=1)[0].strip().lower()
    path = PurePosixPath(file.name.lower())
    suffix = path.suffix
    if mime == "application/pdf" or (suffix == ".pdf" and mime in GENERIC_MIMES):
        return "pdf"
    if mime in IMAGE_SIGNATURES or (mime in GENERIC_MIMES and suffix in IMAGE_EXTENSIONS):
        return "image"
    if mime.startswith("image/"):
        return None
    if mime.startswith("text/") or mime in TEXT_MIMES or mime.endswith(("+json", "+xml")):
        return "text"
    if mime in GENERIC_MIMES and (suffix in TEXT_EXTENSIONS or path.name in TEXT_NAMES):
        return "text"
    return None


def display_name(name: str) -> str:
    """A file's name on one line, without quotes, bounded: for notes and the file's label."""
    name = " ".join(re.sub(r"[\x00-\x1f\x7f\"`]+", " ", name).split()) or "file"
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


@dataclass(frozen=True, slots=True)
class FileText:
    """The text read from one file."""

    name: str
    mime: str
    text: str
    complete: bool = True
    """False when the text was cut (at ``max_chars``, or to fit the context)."""
    pages: int | None = None
    """A PDF's page count."""

    def block(self) -> str:
        """The file as the model reads it: a label line and a fenced block that its text cannot close."""
        longest = max((len(run) for run in re.findall(r"`{3,}", self.text)), default=2)
        fence = "`" * (longest + 1)
        what = self.mime or "text"
        if self.pages is not None:
            what = f"{what}, {self.pages} page{'s' if self.pages != 1 else ''}"
        cut = "" if self.complete else f"\n(cut: only the first {len(self.text):,} characters are shown)"
        return f'Attached file "{self.name}" ({what}):\n{fence}\n{self.text}\n{fence}{cut}'


@dataclass(frozen=True, slots=True)
class Reading:
    """What was read from a message's files."""

    files: tuple[FileText, ...] = ()
    images: tuple[Image, ...] = ()
    image_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """One line per file that was not read (and one for images a text-only model cannot see)."""

    @property
    def chars(self) -> int:
        return sum(len(file.text) for file in self.files)

    def section(self) -> str:
        """The files and images as they follow the user's text in the stored turn ("" if none)."""
        parts = [file.block() for file in self.files]
        parts += [f'Attached image "{name}": shown to the model with this message only.' for name in self.image_names]
        return "\n\n".join(parts)

    def shrink(self, chars: int) -> Reading:
        """The same reading with the files' texts cut to ``chars`` in all, shared in proportion."""
        total = self.chars
        if total <= chars:
            return self
        files = []
        for file in self.files:
            keep = max(0, len(file.text) * chars // total)
            cut = keep < len(file.text)
            files.append(dataclasses.replace(file, text=file.text[:keep], complete=False) if cut else file)
        return dataclasses.replace(self, files=tuple(files))


def not_read(name: str, why: str) -> str:
    return f"📎 {display_name(name)} was not read: {why}."


async def read_attachments(attachments: Sequence[Attachment], settings: AttachmentSettings, *, vision: bool) -> Reading:
    """Download and read ``attachments`` (in order); never raises for a bad file, it becomes a note."""
    files: list[FileText] = []
    images: list[Image] = []
    image_names: list[str] = []
    notes: list[str] = []
    unseen: list[str] = []
    allowed = [KIND_WORDS[kind] for kind in settings.types]
    for index, attachment in enumerate(attachments):
        name = display_name(attachment.name)
        if index >= settings.max_files:
            notes.append(not_read(name, f"at most {settings.max_files} files of a message are read"))
            continue
        kind = kind_of(attachment)
        if kind is None or kind not in settings.types:
            why = f"only {', '.join(allowed)} files are read" if allowed else "this bot reads no files"
            notes.append(not_read(name, why))
            continue
        if kind == "image" and not vision:
            unseen.append(name)
            continue
        try:
            data = await _download(attachment, settings.max_bytes)
            if kind == "image":
                images.append(_image(attachment, data))
                image_names.append(name)
            elif kind == "pdf":
                files.append(await _pdf(name, data, settings.max_chars))
            else:
                files.append(_text(name, attachment.mime, data, settings.max_chars))
        except Unreadable as exc:
            notes.append(not_read(name, str(exc)))
    if unseen:
        notes.append(f"{NO_VISION} (not seen: {', '.join(unseen)}).")
    return Reading(tuple(files), tuple(images), tuple(image_names), tuple(notes))


async def _download(attachment: Attachment, limit: int) -> bytes:
    if attachment.fetch is None:
        raise Unreadable("the bot restarted before downloading it; please send it again")
    if attachment.size is not None and attachment.size > limit:
        raise Unreadable(f"it is {_megabytes(attachment.size)}; the limit is {_megabytes(limit)}")
    try:
        data = await attachment.fetch(limit)
    except FileTooLarge:
        raise Unreadable(f"it is larger than the limit of {_megabytes(limit)}") from None
    except ParleyError as exc:
        log.warning("downloading an attachment failed: %s", exc)
        raise Unreadable("the download failed") from None
    if len(data) > limit:
        raise Unreadable(f"it is larger than the limit of {_megabytes(limit)}")
    if not data:
        raise Unreadable("it is empty")
    return data


def _image(attachment: Attachment, data: bytes) -> Image:
    for mime, signatures in IMAGE_SIGNATURES.items():
        if data.startswith(signatures) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return Image(mime, data)
    raise Unreadable("it is not a PNG, JPEG, GIF or WebP image")


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    if b"\x00" in data[:8192]:
        raise Unreadable("it is not text (it holds binary data)")
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")


def _text(name: str, mime: str, data: bytes, limit: int) -> FileText:
    text = clean_text(_decode(data))
    if not text.strip():
        raise Unreadable("it holds no text")
    mime = mime.split(";", maxsplit=1)[0].strip().lower() or "text"
    return FileText(name, mime, text[:limit], complete=len(text) <= limit)


async def _pdf(name: str, data: bytes, limit: int) -> FileText:
    try:
        found = await read_pdf(data, limit, PDF_SECONDS)
    except PdfUnreadable as exc:
        raise Unreadable(str(exc)) from None
    text = clean_text(found.text).strip()
    if not text:
        raise Unreadable("it has no text layer (a scan or pictures only)")
    return FileText(
        name, "application/pdf", text[:limit], complete=found.complete and len(text) <= limit, pages=found.pages
    )
