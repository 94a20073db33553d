"""What the benchmarks share: settings for a bench app, a client of ``POST /api/chat``, result rows.

Apps are built through the composition root (``bot.main.build_app``) with the web server on an
ephemeral port, rate limits off (every request comes from the same local user) and a fresh SQLite
file. Engine fields the installed engine does not know yet (``parallel``, ``kv_cache_dir``, ...)
are left out, so the benchmarks run on the engine of any revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import Parley
from bot.main import build_app
from bot.settings import EngineSettings, LimitsSettings, Settings, WebSettings
from engine.scheduler import EngineStats

SEED = 42
FACTUAL = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What gas do plants take in from the air?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Which planet is closest to the Sun?",
    "What is the largest ocean on Earth?",
    "How many days are in a leap year?",
)
"""Short factual prompts, one per conversation."""


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    threads: int
    """Threads of both sides of the single-stream comparison."""
    bot_threads: int | None
    """Threads of the bot in the other benchmarks; None: the engine's default."""
    runs: int
    openai_url: str | None
    workdir: Path


@dataclass(slots=True)
class Row:
    """One printed figure; ``ok`` is None where there is no goal."""

    bench: str
    label: str
    value: float | None
    unit: str = ""
    goal: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass(slots=True)
class Answer:
    """One streamed reply as the API client saw it."""

    conversation_id: str
    text: str
    completion_tokens: int
    prompt_tokens: int
    first_token: float
    """Seconds from sending the request to the first text delta."""
    seconds: float
    """Seconds from sending the request to the final event."""


@dataclass(slots=True)
class Skipped:
    fields: list[str] = field(default_factory=list)


SKIPPED = Skipped()
"""Engine fields asked for but unknown to the installed ``EngineSettings``."""


def engine_settings(**fields: Any) -> EngineSettings:
    """``EngineSettings`` with the fields this revision has; the rest are noted in ``SKIPPED``."""
    known = EngineSettings.model_fields
    for name in fields:
        if name not in known and name not in SKIPPED.fields:
            SKIPPED.fields.append(name)
    return EngineSettings(**{name: value for name, value in fields.items() if name in known})


def has_field(name: str) -> bool:
    return name in EngineSettings.model_fields


def bench_settings(options: Options, name: str, **engine: Any) -> Settings:
    """Greedy, seeded, ``options.bot_threads``; ``engine`` overrides; its own database file."""
    fields: dict[str, Any] = {"temperature": 0.0, "seed": SEED}
    if options.bot_threads is not None:
        fields["threads"] = options.bot_threads
    fields |= engine
    return Settings(
        engine=engine_settings(**fields),
        web=WebSettings(port=0),
        limits=LimitsSettings(messages_per_minute=0),
        db_path=options.workdir / f"{name}.db",
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Parley, str]]:
    """The app, started, and the URL of its chat API."""
    async with build_app(settings) as app:
        web = app.web
        if web is None:
            raise RuntimeError("the bench needs the web server (PARLEY_WEB__ENABLED)")
        yield app, web.url + "/api/chat"


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    message: str,
    *,
    max_tokens: int,
    conversation_id: str | None = None,
) -> Answer:
    """One turn through ``POST /api/chat`` with SSE, timed from the client's side."""
    body: dict[str, Any] = {"message": message, "max_tokens": max_tokens, "temperature": 0}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    start = time.perf_counter()
    first: float | None = None
    async with http.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"POST /api/chat answered {response.status}: {(await response.text())[:300]}")
        async for raw in response.content:
            if not raw.startswith(b"data: "):
                continue
            event = json.loads(raw[6:])
            if "error" in event:
                raise RuntimeError(f"the reply failed: {event['error']}")
            if event.get("delta") and first is None:
                first = time.perf_counter() - start
            if event.get("done"):
                usage = event.get("usage") or {}
                return Answer(
                    conversation_id=event["conversation_id"],
                    text=event.get("text", ""),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    first_token=first if first is not None else time.perf_counter() - start,
                    seconds=time.perf_counter() - start,
                )
    raise RuntimeError("the reply ended without its final event")


def client(*, fresh: bool = False) -> aiohttp.ClientSession:
    """A session for the benchmarks: no total timeout (long replies under load), one connection per
    concurrent conversation; ``fresh``: a new connection per request (llama-server closes its
    connection after a streamed reply while announcing keep-alive, so a pooled one fails)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
        connector=aiohttp.TCPConnector(limit=64, force_close=fresh),
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def rss_bytes(pid: int | str = "self") -> tuple[int, int]:
    """Resident size now and at its peak (VmRSS, VmHWM), in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            found[name] = int(rest.split()[0]) * 1024
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class Vocabulary:
    """The model's tokenizer alone (no weights, no context): one measure of reply length everywhere."""

    def __init__(self, model_path: Path) -> None:
        import llama_cpp

        self.path = model_path
        self._llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        self.metadata: dict[str, str] = dict(self._llm.metadata)

    def tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def kv_bytes_per_token(self) -> int:
        """F16 K and V for every layer: 2 x layers x KV heads x head size x 2 bytes."""
        arch = self.metadata.get("general.architecture", "llama")
        layers = int(self.metadata[f"{arch}.block_count"])
        heads = int(self.metadata[f"{arch}.attention.head_count"])
        kv_heads = int(self.metadata.get(f"{arch}.attention.head_count_kv", heads))
        embedding = int(self.metadata[f"{arch}.embedding_length"])
        head_size = int(self.metadata.get(f"{arch}.attention.key_length", embedding // heads))
        return 2 * layers * kv_heads * head_size * 2

    def close(self) -> None:
        self._llm.close()


async def settled(app: Parley) -> None:
    """Wait until the bot's engine has nothing left to do: 0.1 s after a turn it reads the turn's
    template end ahead (:mod:`engine.scheduler`), and whatever is measured next meanwhile shares the
    cores with it. In the single stream, raw streaming came next and was the one slowed: in
    alternating runs here, bot / raw was 1.14 and 1.12 without this wait and 1.07 and 1.06 with it
    (loop / raw 1.21-1.26 against 1.08-1.10)."""
    for _ in range(100):
        await asyncio.sleep(0.05)
        stats: EngineStats = getattr(app.engine, "stats", EngineStats())  # only the local engine reads ahead
        if stats.reading_ahead == 0:
            break
    await asyncio.sleep(0.05)  # the last step read ahead ends after the list empties
