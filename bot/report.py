"""What ``parley check`` found, and how it is shown.

A check (one per platform, the engine, the web server) returns :class:`Finding` s: one line each,
ok, a problem (with the ``fix``: the setting to change, or where) or a warning. :func:`bounded`
runs a check under a time limit and turns whatever escapes it into a problem, so one dead
platform never hides the others' results. Secrets never reach the report: checks show tokens
through :func:`masked`, and :func:`redact` removes any that slipped into an error text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass

OK, PROBLEM, WARNING = "✓", "✗", "!"
ASCII_MARKS = {OK: "ok", PROBLEM: "FIX", WARNING: "warn"}
MIN_SECRET = 6
"""Shorter values are not redacted: they would hide ordinary words."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: ``subject`` (``telegram``, ``engine``, ...), what was found, the fix."""

    subject: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False
    """Worth knowing, not blocking: the exit code stays 0 (``ok`` is true)."""

    @property
    def mark(self) -> str:
        if not self.ok:
            return PROBLEM
        return WARNING if self.warning else OK


def problem(subject: str, detail: str, fix: str | None = None) -> Finding:
    return Finding(subject, False, detail, fix)


def warning(subject: str, detail: str, fix: str | None = None) -> Finding:
    return Finding(subject, True, detail, fix, warning=True)


def masked(secret: str) -> str:
    """A token as the report may show it: its last 4 characters, and only when that leaves most of it hidden."""
    return f"…{secret[-4:]}" if len(secret) >= 16 else "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def describe(error: BaseException) -> str:
    """An error's text for the report, without its traceback."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def bounded(subject: str, check: Awaitable[list[Finding]], seconds: float, fix: str) -> list[Finding]:
    """``check``'s findings, or one problem (with ``fix``) if it takes longer than ``seconds`` or fails."""
    try:
        async with asyncio.timeout(seconds):
            return await check
    except TimeoutError:
        return [problem(subject, f"no answer within {seconds:g} s", fix)]
    except Exception as exc:  # noqa: BLE001 - the report is where the admin learns of it
        return [problem(subject, describe(exc), fix)]


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when nothing must be fixed (warnings allowed), 1 otherwise."""
    return 0 if all(finding.ok for finding in findings) else 1


def format_report(findings: Sequence[Finding], *, ascii_only: bool = False) -> str:
    """One line per finding (mark, subject, detail), its fix indented below, then a summary line."""
    width = max((len(finding.subject) for finding in findings), default=0)
    lines = []
    for finding in findings:
        mark = ASCII_MARKS[finding.mark] if ascii_only else finding.mark
        pad = max(len(m) for m in ASCII_MARKS.values()) if ascii_only else 1
        indent = " " * (pad + width + 3)
        first, *more = finding.detail.splitlines() or [""]
        lines.append(f"{mark:<{pad}} {finding.subject:<{width}}  {first}")
        lines.extend(f"{indent}{line}" for line in more)
        if finding.fix:
            lines.append(f"{indent}fix: {finding.fix}")
    problems = sum(not finding.ok for finding in findings)
    warnings = sum(finding.ok and finding.warning for finding in findings)
    summary = f"{problems} problem{'s' if problems != 1 else ''} to fix" if problems else "all good"
    if warnings:
        summary += f", {warnings} warning{'s' if warnings != 1 else ''}"
    return "\n".join([*lines, "", summary + "."])
