"""Prometheus metrics (the official ``prometheus-client``), one registry per app.

The web server serves them at ``GET /metrics`` in the text format. What is measured where:

- replies, their latency and tokens: the chat service, when a reply ends;
- platform calls, 429s and edits per reply: the reply streamer and notices, the only code that
  calls ``send``/``edit`` and native streams (method ``stream``);
- the engine: read from :meth:`bot.engine.Engine.metrics` at each scrape;
- load: the inbox and the conversations with work, read at each scrape;
- plugins add their own with :meth:`Metrics.counter`, :meth:`Metrics.gauge` and
  :meth:`Metrics.histogram` (through ``inv.metrics`` and ``ctx.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

M = TypeVar("M", Counter, Gauge, Histogram)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
EDIT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)

ENGINE_GAUGES = {
    "busy_sequences": "Sequences generating right now",
    "queue_length": "Requests waiting for the engine",
    "kv_cache_bytes": "Bytes of saved conversation state (KV) held by the cache",
    "kv_cache_entries": "Conversations whose KV state the cache holds",
}
ENGINE_COUNTERS = {
    "kv_cache_hits": "Turns that continued from a conversation's cached KV state",
    "kv_cache_misses": "Turns that had to read their whole history",
    "prompt_tokens_decoded": "Prompt tokens the engine actually decoded (cache hits read only the new ones)",
}


class _Live(Collector):
    """Figures read at scrape time: the engine's, and the chat service's load."""

    def __init__(self, engine: Callable[[], Mapping[str, float]], load: Callable[[], Mapping[str, float]]) -> None:
        self.engine = engine
        self.load = load

    def collect(self) -> Iterator[Metric]:
        figures = self.engine()
        for name, documentation in ENGINE_GAUGES.items():
            if name in figures:
                yield GaugeMetricFamily(f"parley_engine_{name}", documentation, value=figures[name])
        for name, documentation in ENGINE_COUNTERS.items():
            if name in figures:
                yield CounterMetricFamily(f"parley_engine_{name}", documentation, value=figures[name])
        if "queue_wait_seconds_sum" in figures:
            yield SummaryMetricFamily(
                "parley_engine_queue_wait_seconds",
                "Time requests waited for a place in the engine",
                count_value=int(figures.get("queue_wait_count", 0)),
                sum_value=figures["queue_wait_seconds_sum"],
            )
        load = self.load()
        yield GaugeMetricFamily("parley_inbox_depth", "Messages stored and not answered yet", value=load["inbox"])
        yield GaugeMetricFamily(
            "parley_active_conversations",
            "Conversations with a reply running or messages waiting",
            value=load["active"],
        )


class Metrics:
    """The app's metrics; see the module docstring."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.replies = Counter(
            "parley_replies", "Replies by platform and outcome", ["platform", "outcome"], registry=registry
        )
        self.first_token = Histogram(
            "parley_time_to_first_token_seconds",
            "From the start of a reply to its first token",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reply_seconds = Histogram(
            "parley_reply_seconds",
            "Whole replies, start to end",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("parley_tokens", "Tokens by kind (prompt, generated)", ["kind"], registry=registry)
        self.platform_calls = Counter(
            "parley_platform_calls", "Calls to chat platforms", ["platform", "method"], registry=registry
        )
        self.rate_limited = Counter(
            "parley_platform_rate_limited",
            "Calls a platform refused with 429 (rate limited)",
            ["platform", "method"],
            registry=registry,
        )
        self.edits_per_reply = Histogram(
            "parley_edits_per_reply",
            "Message edits per streamed reply",
            ["platform"],
            buckets=EDIT_BUCKETS,
            registry=registry,
        )
        self._own: dict[str, Any] = {}

    def watch(self, engine: Callable[[], Mapping[str, float]], load: Callable[[], Mapping[str, float]]) -> None:
        """Read the engine's figures and the load at every scrape (called once by the chat service)."""
        self.registry.register(_Live(engine, load))

    def exposition(self) -> bytes:
        """Everything, in the Prometheus text format."""
        return generate_latest(self.registry)

    # for plugins

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter in the app's registry, created on first use (the same one on later calls)."""
        return self._get(Counter, name, documentation, labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, documentation, labels)

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Histogram:
        return self._get(Histogram, name, documentation, labels)

    def _get(self, kind: type[M], name: str, documentation: str, labels: Sequence[str]) -> M:
        found = self._own.get(name)
        if found is None:
            made = kind(name, documentation, list(labels), registry=self.registry)
            self._own[name] = made
            return made
        if not isinstance(found, kind):
            raise ValueError(f"metric {name!r} exists as a {type(found).__name__}")
        return found
