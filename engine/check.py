"""``parley check`` for the engine: start it as ``parley run`` would, generate a few tokens, stop it.

Works on any :class:`~bot.engine.Engine`: for the local one starting loads the model file, for the
OpenAI-compatible one it reaches the server. The reply is short (:data:`MAX_TOKENS`) and greedy,
so the check costs about a second on the bundled model.
"""

from __future__ import annotations

import time

from bot.engine import ChatMessage, Engine, GenerationParams
from bot.errors import EngineError
from bot.report import Finding, describe, problem
from bot.settings import EngineSettings

SUBJECT = "engine"
MAX_TOKENS = 8
PROMPT = "Say hello to the people in this chat."


def _fix(settings: EngineSettings, prefix: str = "PARLEY_ENGINE__") -> str:
    if settings.backend == "openai":
        return f"start the model server, or {prefix}BASE_URL (and {prefix}API_KEY, {prefix}MODEL)"
    return f"{prefix}MODEL_PATH: a GGUF model file that llama.cpp can load (or unset it for the bundled model)"


def _what(settings: EngineSettings) -> str:
    if settings.backend == "openai":
        return f"openai at {settings.base_url}, model {settings.model}"
    return f"local, {settings.model_path.name if settings.model_path else '?'}"


async def check(
    engine: Engine,
    settings: EngineSettings,
    system_prompt: str,
    *,
    subject: str = SUBJECT,
    prefix: str = "PARLEY_ENGINE__",
) -> list[Finding]:
    """Start ``engine``, generate a few tokens, stop it; ``subject`` and ``prefix`` (of the settings that fix
    it) name a model of ``PARLEY_MODELS`` in the findings."""
    what = _what(settings)
    began = time.monotonic()
    try:
        await engine.start()
    except EngineError as exc:
        return [problem(subject, f"{what}: cannot start: {exc}", _fix(settings, prefix))]
    try:
        started = time.monotonic() - began
        messages = [ChatMessage("system", system_prompt), ChatMessage("user", PROMPT)]
        began = time.monotonic()
        reply = engine.generate(messages, GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=0))
        try:
            async with reply:
                text = await reply.text()
        except EngineError as exc:
            failed = f"{what}: started, but generating failed: {describe(exc)}"
            return [problem(subject, failed, _fix(settings, prefix))]
        took = time.monotonic() - began
    finally:
        await engine.stop()
    words = " ".join(text.split())
    if not words:
        return [problem(subject, f"{what}: the model answered nothing in {took:.1f} s", _fix(settings, prefix))]
    tokens = reply.usage.completion_tokens
    verb = "loaded" if settings.backend == "local" else "reached"
    return [
        Finding(
            subject,
            True,
            f'{what}: {verb} in {started:.1f} s; {tokens or "?"} tokens in {took:.1f} s: "{words[:60]}"',
        )
    ]
