"""A PDF's text layer, read in a child process that is killed when it takes too long.

A PDF is a program of sorts: a crafted one (deeply nested objects, a content stream of millions of
operators, a decompression bomb) can keep ``pypdf`` busy for minutes or fill the memory. A thread
cannot be stopped, so a hostile file read in one would keep a core busy after its reply gave up on
it, and on a small machine slow every reply the engine writes. :func:`read_pdf` runs
``python -m bot.pdftext`` instead: the file on its stdin, a JSON answer on its stdout. The child
runs at a lower priority than the bot, under a memory and a CPU-time limit, with none of the bot's
environment (no tokens), and is killed at the deadline. At most ``READERS`` children run at once,
however many people send PDFs together: a file waits for a place at most as long as it may be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MEMORY_LIMIT = 1024 * 1024 * 1024
"""Address space of the child, in bytes: a decompression bomb fails there instead of in the bot."""
NICENESS = 10
"""How much lower the child's priority is than the bot's: the engine's threads come first."""
READERS = 2
"""PDF readers running at once (each may hold ``MEMORY_LIMIT`` and a core); the others wait."""
ROOT = str(Path(__file__).resolve().parent.parent)
"""Where the ``bot`` package is, so the child finds it however the bot was started."""


class PdfUnreadable(Exception):
    """Why a PDF gave no text: the reason, said to the user."""


@dataclass(frozen=True, slots=True)
class PdfText:
    text: str
    complete: bool
    """False when reading stopped at the character limit."""
    pages: int


_places: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
"""The readers' places, per event loop (a semaphore belongs to the loop it first waits in)."""


async def read_pdf(data: bytes, limit: int, seconds: float) -> PdfText:
    """The text of the PDF ``data`` up to about ``limit`` characters; :class:`PdfUnreadable` for a
    file that is not a readable PDF, is encrypted, or is not read within ``seconds``, and when no
    reader's place frees within ``seconds`` (too many PDFs at once)."""
    places = _places.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(READERS))
    try:
        async with asyncio.timeout(seconds):
            await places.acquire()
    except TimeoutError:
        log.warning("no PDF reader free within %.0f s (%d at once)", seconds, READERS)
        raise PdfUnreadable("it could not be read just now") from None
    try:
        return await _read(data, limit, seconds)
    finally:
        places.release()


async def _read(data: bytes, limit: int, seconds: float) -> PdfText:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT, "PYTHONIOENCODING": "utf-8"}
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.pdftext",
            str(limit),
            str(max(1, int(seconds) + 1)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
    except OSError as exc:  # no process to be had (limits of the machine): the reply goes on without it
        log.warning("cannot start the PDF reader: %s", exc)
        raise PdfUnreadable("it could not be read just now") from None
    try:
        async with asyncio.timeout(seconds):
            out, err = await child.communicate(data)
    except TimeoutError:
        raise PdfUnreadable("reading its text took too long") from None
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    try:
        answer = json.loads(out)
    except ValueError:
        # Killed by its limits (memory, CPU time) or crashed: the file is what made it so.
        log.info("the PDF reader ended with %s: %s", child.returncode, err.decode("utf-8", "replace")[-300:])
        raise PdfUnreadable("it is not a readable PDF") from None
    if "error" in answer:
        if answer.get("detail"):
            log.info("a PDF could not be read: %s", str(answer["detail"])[:300])
        raise PdfUnreadable(str(answer["error"]))
    return PdfText(str(answer["text"]), bool(answer["complete"]), int(answer["pages"]))


def extract(data: bytes, limit: int) -> PdfText:
    """The text layer, page by page, until ``limit`` characters (in this process)."""
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise PdfUnreadable("it is encrypted")
        pages = len(reader.pages)
        parts: list[str] = []
        size = 0
        for page in reader.pages:
            if size > limit:
                return PdfText("\n\n".join(parts), False, pages)
            part = page.extract_text() or ""
            parts.append(part)
            size += len(part) + 2
        return PdfText("\n\n".join(parts), True, pages)
    except PdfUnreadable:
        raise
    except PyPdfError as exc:
        raise PdfUnreadable("it is not a readable PDF") from exc
    except Exception as exc:  # pypdf has no closed list of what a broken file raises
        raise PdfUnreadable("it is not a readable PDF") from exc


def _limit_self(cpu_seconds: int) -> None:
    import resource

    with contextlib.suppress(OSError, ValueError):
        os.nice(NICENESS)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))


def main() -> None:
    """``python -m bot.pdftext LIMIT CPU_SECONDS``: the PDF on stdin, ``{"text", "complete",
    "pages"}`` or ``{"error"}`` on stdout."""
    limit, cpu_seconds = int(sys.argv[1]), int(sys.argv[2])
    _limit_self(cpu_seconds)
    logging.disable(logging.CRITICAL)  # pypdf's warnings about a broken file are not the answer
    data = sys.stdin.buffer.read()
    try:
        found = extract(data, limit)
        answer: dict[str, object] = {"text": found.text, "complete": found.complete, "pages": found.pages}
    except PdfUnreadable as exc:
        answer = {"error": str(exc), "detail": repr(exc.__cause__) if exc.__cause__ is not None else ""}
    except MemoryError:
        answer = {"error": "it is too big to read"}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
