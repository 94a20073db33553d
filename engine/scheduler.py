"""Continuous batching: one worker thread drives one llama.cpp context for every reply at once.

Each step is one ``llama_decode`` holding the next token of every generating sequence plus up to
``prompt_chunk`` prompt tokens of sequences that are starting, so a long new prompt delays the
replies already streaming by one bounded step, not by its whole length. A request joins at the
next step; a cancelled one leaves at the next step and frees its place.

A *place* is one of the context's sequences. After a reply it keeps the conversation's KV
(``owner``), so the next turn decodes only the tokens after the longest common prefix. When a
place is needed for another conversation, its state goes to the :class:`~engine.kvcache.KVCache`
and comes back (into any place) on that conversation's next turn. A state that does not load is
discarded and the prompt read again.

Once it has had nothing to do for :data:`IDLE_GRACE`, the worker decodes ahead what every next
turn of a conversation starts with: the chat template's end of the reply and opening of the user's
message (:attr:`~engine.llama.Model.turn_suffix`), so a follow-up reads only its own text. It does
so one token per step, so new work waits at most one single-token step for it. A conversation that
has come back before (its turn continued from its own KV) is likely to come back again, and its
next turn should not wait for the engine to be idle: its suffix goes along with the next step in
which other replies only generate (never one that reads a prompt, whose first token would wait
for it). That costs about what reading it with the next prompt would, where it would delay the
first token: measured here, 8 conversations taking turns got their first token after ~13 tokens
read instead of ~18. One-off conversations are read ahead only when idle, where it costs nothing.

Requests and results cross threads in two ways only: ``submit``/``cancel``/``forget``/``withdraw``
take a lock and wake the worker, and each request's ``post`` (``loop.call_soon_threadsafe``)
carries :data:`STARTED`, text deltas, then :data:`DONE` or an exception to its ``emit`` on the
consumer's side. While a request waits, it also gets a :class:`~bot.engine.QueueStatus` each time
its position changes, with an estimate from the time recent replies held their place
(:class:`~bot.waiting.ReplyTimes`).

The worker does not post each result as it comes: it collects a step's results and posts them in
one call per event loop just before the next ``llama_decode``, which releases the GIL. The event
loop then handles them while llama.cpp computes. Posted one at a time, each result woke the loop
while the worker still had Python to run, and the two threads took turns at the GIL: measured
here, 0.2 ms a token for one reply through the engine and 0.5 ms through the HTTP API, about 4%
of a single-token step. Even one post a step cost the worker about 0.2 ms at the GIL (the wake-up
write releases it, and the woken loop takes it), so text that is not a reply's first may wait up
to :data:`POST_GAP` and goes out as one delta per reply: in alternating runs here, one stream
through the HTTP API went from 0.88-1.01 to 0.97-1.03 of the plainest low-level loop's speed.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.engine import GenerationParams, QueueStatus, Usage
from bot.errors import EngineBusy, EngineError
from bot.waiting import ReplyTimes
from engine.kvcache import KVCache, SavedState
from engine.llama import Batch, Context, Model, Sampler

log = logging.getLogger(__name__)

POST_GAP = 0.03
"""Seconds a reply's text may wait to be posted, so that the event loop is woken (and takes the
GIL) every few steps rather than every step; a reply's first text, its end, errors and queue
places go out in the next step. A chat shows text far less often than this."""

STARTED = object()
"""Emitted when a request gets its place (the queue wait is over)."""
DONE = object()
"""Emitted last, after ``usage`` is complete."""
MOVE_TOKENS_PER_STEP = 50
"""A running sequence is moved to close a gap only if the tokens copied are at most this many per
token its reply may still generate (a move of N tokens costs about what N / 100 steps save)."""
MIN_SHARED_PREFIX = 8
"""Tokens a copied prefix must save before a sequence is copied for it."""
IDLE_GRACE = 0.1
"""Seconds without work before the read-ahead starts. Back-to-back requests come sooner, and reading
ahead between them slowed them (8 at once: about 5% fewer tok/s in total): llama.cpp's threads then
compete with the event loop, which is preparing the next request. People take longer to answer."""
COPY_COST_RATIO = 20
"""At most this many tokens of a sequence are copied per prompt token the copy saves (copying a
token's KV costs about 1/50 of decoding it here)."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters since start-up (a snapshot): what the KV cache saved and what was decoded."""

    active: int = 0
    queued: int = 0
    reading_ahead: int = 0
    """Finished turns whose template suffix is still to be read ahead."""
    requests: int = 0
    kv_hits: int = 0
    """Turns that continued from their conversation's own KV (in a place, RAM or disk)."""
    kv_misses: int = 0
    """Turns of a conversation whose KV was not kept (first turn, forgotten, evicted, changed prefix)."""
    kv_restores_ram: int = 0
    kv_restores_disk: int = 0
    kv_load_failures: int = 0
    kv_saves: int = 0
    kv_moves: int = 0
    """Conversations whose KV moved to another sequence to keep the ids in use consecutive."""
    kv_prefix_copies: int = 0
    """Turns without KV of their own that started from a copy of another sequence's shared prefix
    (the system prompt and persona a new conversation has in common with others)."""
    kv_ram_bytes: int = 0
    kv_ram_entries: int = 0
    kv_disk_bytes: int = 0
    kv_disk_entries: int = 0
    prompt_tokens: int = 0
    """Prompt tokens of all requests, as if nothing were cached."""
    prompt_tokens_decoded: int = 0
    """Prompt tokens actually decoded (the rest came from kept KV, or were read ahead)."""
    idle_tokens: int = 0
    """Tokens decoded ahead while idle: the template's end of a finished turn (see the module)."""
    busy_ahead_tokens: int = 0
    """Tokens decoded ahead along with other replies' steps: the template's end of a finished turn
    of a conversation that has come back before (see the module)."""
    completion_tokens: int = 0
    steps: int = 0


@dataclass(eq=False, slots=True)
class Request:
    """One reply to generate: ``tokens`` is the prompt, already fitted to the context."""

    tokens: list[int]
    params: GenerationParams
    affinity: str | None
    emit: Callable[[object], None]
    """Takes each result, on the consumer's side (its event loop thread)."""
    post: Callable[[Callable[[], None]], object]
    """Runs a callback on the consumer's side from any thread (``loop.call_soon_threadsafe``)."""
    usage: Usage
    measured: bool = True
    """Whether its time goes into the queue's estimates (not for a read-ahead of the engine's own)."""
    cancelled: bool = False
    position: int = 0
    """Its place in the wait queue as last reported (0: not reported)."""


@dataclass(eq=False, slots=True)
class _Place:
    seq: int
    tokens: list[int] = field(default_factory=list)
    """Tokens whose KV the sequence holds, position 0 first."""
    owner: str | None = None
    last_used: float = 0.0
    job: _Job | None = None


@dataclass(slots=True)
class _Closing:
    """A finished turn whose place is to decode ``tail`` while idle, if it still holds the turn."""

    place: _Place
    owner: str
    length: int
    """``len(place.tokens)`` as this left it: any other change means the place moved on."""
    tail: list[int]
    """What is left to decode."""
    returning: bool = False
    """The turn continued from the conversation's own KV: read ahead without waiting for idle."""


@dataclass(eq=False, slots=True)
class _Job:
    request: Request
    place: _Place
    sampler: Sampler
    pending: list[int]
    """Prompt tokens still to decode."""
    keep: bool = True
    """Whether the place keeps the conversation's KV afterwards (``forget`` clears it)."""
    returning: bool = False
    """The turn continued from the conversation's own KV (a cache hit)."""
    next_token: int | None = None
    generated: int = 0
    shown: bool = False
    """Some of the reply's text has gone out (its first text is posted at once)."""
    started: float = field(default_factory=time.perf_counter)
    text: codecs.BufferedIncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )


class Scheduler:
    """Owns ``context`` from its worker thread; see the module docstring."""

    def __init__(
        self,
        model: Model,
        context: Context,
        cache: KVCache,
        *,
        parallel: int,
        prompt_chunk: int,
        queue_size: int,
        repeat_penalty: float,
        repeat_last_n: int,
    ) -> None:
        self.model = model
        self.context = context
        self.cache = cache
        self.parallel = parallel
        self.prompt_chunk = prompt_chunk
        self.queue_size = queue_size
        self.repeat_penalty = repeat_penalty
        self.repeat_last_n = repeat_last_n
        self._places = [_Place(seq) for seq in range(parallel)]
        self._jobs: list[_Job] = []  # in admission order
        self._batch = Batch(prompt_chunk + parallel)
        self._lock = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._forgotten: list[str] = []
        self._closing: list[_Closing] = []
        """Finished turns whose template suffix is to be decoded once the engine is idle."""
        self._suffix = list(model.turn_suffix)
        self._outbox: list[tuple[Request, object]] = []
        """Results of the worker not yet posted to their consumers (see the module docstring)."""
        self._urgent = False
        """The outbox holds something to post in the next step (not only text that can wait)."""
        self._posted_at = 0.0
        self._n_ctx_seq = context.n_ctx_seq
        self._worked_at = 0.0
        """When the worker last finished a step for a request (``monotonic``)."""
        self._running = 0
        self._admitted: dict[Request, float] = {}
        """When each request that holds a place got it (``perf_counter``)."""
        self._times = ReplyTimes()
        self._stopping = False
        self._counts: dict[str, int] = dict.fromkeys(
            [
                "requests",
                "kv_hits",
                "kv_misses",
                "kv_restores_ram",
                "kv_restores_disk",
                "kv_load_failures",
                "kv_saves",
                "kv_moves",
                "kv_prefix_copies",
                "prompt_tokens",
                "prompt_tokens_decoded",
                "idle_tokens",
                "busy_ahead_tokens",
                "completion_tokens",
                "steps",
            ],
            0,
        )
        self._thread = threading.Thread(target=self._run, name="llama-scheduler", daemon=True)

    # any thread

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: Request) -> None:
        """Queue ``request``; ``EngineBusy`` at once when every place is taken and the queue is full."""
        with self._lock:
            if self._stopping:
                raise EngineError("the engine is stopping")
            if self._running + len(self._waiting) >= self.parallel + self.queue_size:
                raise EngineBusy(f"the engine is busy: {self.parallel} replies running, {self.queue_size} waiting")
            self._waiting.append(request)
            self._report_waiting()
            self._lock.notify()

    def withdraw(self, request: Request) -> bool:
        """Take ``request`` out of the queue; ``False`` if it already has a place (or ended)."""
        with self._lock:
            try:
                self._waiting.remove(request)
            except ValueError:
                return False
            self._report_waiting()
            return True

    def cancel(self, request: Request) -> None:
        """Stop ``request``: a queued one ends now, a running one at the next step."""
        with self._lock:
            request.cancelled = True
            try:
                self._waiting.remove(request)
            except ValueError:
                self._lock.notify()
                return
            self._report_waiting()
        request.usage.finish_reason = "cancelled"
        _tell(request, DONE)

    @property
    def reply_times(self) -> ReplyTimes:
        """How long recent replies held their place (for tests and diagnostics)."""
        return self._times

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def forget(self, affinity: str) -> None:
        with self._lock:
            self._forgotten.append(affinity)
            self._lock.notify()

    def stop(self) -> None:
        """End every reply (``cancelled``), keep the places' states in the cache, release the context."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join()

    def stats(self) -> EngineStats:
        with self._lock:
            queued = len(self._waiting)
            active = self._running
        return EngineStats(
            active=active,
            queued=queued,
            reading_ahead=len(self._closing),  # the worker's list: a snapshot is all that is read
            kv_ram_bytes=self.cache.ram_used,
            kv_ram_entries=self.cache.ram_entries,
            kv_disk_bytes=self.cache.disk_used,
            kv_disk_entries=self.cache.disk_entries,
            **self._counts,
        )

    # the worker thread

    def _run(self) -> None:
        try:
            while self._next():
                try:
                    self._step()
                except Exception as exc:  # a bug or llama.cpp failure must not leave replies hanging
                    log.exception("decoding step failed")
                    for job in list(self._jobs):
                        self._fail(job, EngineError(f"generation failed: {exc}"))
        finally:
            self._shutdown()

    def _next(self) -> bool:
        """Wait for work; apply forgets, drop cancelled jobs, admit requests. ``False``: stop."""
        if not self._jobs:
            self._flush()  # nothing is decoding next: no step would post the results
        with self._lock:
            while not (self._stopping or self._forgotten or self._jobs or self._waiting):
                if not self._closing:
                    self._lock.wait()
                    continue
                idle = time.monotonic() - self._worked_at
                if idle >= IDLE_GRACE:
                    break
                self._lock.wait(IDLE_GRACE - idle)
            if self._stopping:
                return False
            forgotten, self._forgotten = self._forgotten, []
            admitted = []
            while self._waiting and self._running < self.parallel:
                request = self._waiting.popleft()
                admitted.append(request)
                self._running += 1
                self._admitted[request] = time.perf_counter()
            if admitted:
                self._report_waiting()
        for affinity in forgotten:
            self._forget(affinity)
        for job in list(self._jobs):
            if job.request.cancelled:
                self._finish(job, "cancelled")
        for request in admitted:
            try:
                self._admit(request)
            except Exception as exc:
                log.exception("cannot start a reply")
                self._release(request)
                self._send(request, EngineError(f"generation failed: {exc}"))
        return True

    def _forget(self, affinity: str) -> None:
        self.cache.discard(affinity)
        for place in self._places:
            if place.job is not None and place.job.request.affinity == affinity:
                place.job.keep = False
            elif place.owner == affinity:
                place.owner = None
                self.context.truncate(place.seq, 0)
                place.tokens = []

    def _admit(self, request: Request) -> None:
        if request.cancelled:
            self._release(request)
            request.usage.finish_reason = "cancelled"
            self._send(request, DONE)
            return
        affinity = request.affinity
        place, own = self._place_for(affinity, request.tokens)
        try:
            self._start(request, place, own)
        except BaseException:
            place.owner = None  # its KV and token list may disagree: start it afresh next time
            place.job = None
            self.context.truncate(place.seq, 0)
            place.tokens = []
            raise

    def _start(self, request: Request, place: _Place, own: bool) -> None:
        affinity = request.affinity
        if not own and affinity is not None:
            own = self._restore(place, affinity)
        if not own:
            self._borrow_prefix(place, request.tokens)
        keep = _common_prefix(place.tokens, request.tokens)
        keep = min(keep, len(request.tokens) - 1)  # the last prompt token is decoded again, for its logits
        self.context.truncate(place.seq, keep)
        del place.tokens[keep:]
        self._counts["requests"] += 1
        self._counts["prompt_tokens"] += len(request.tokens)
        returning = own and keep > 0
        if affinity is not None:
            self._counts["kv_hits" if returning else "kv_misses"] += 1
        params = request.params
        sampler = Sampler(
            self.model,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            penalty=self.repeat_penalty,
            last_n=self.repeat_last_n,
        )
        job = _Job(request, place, sampler, request.tokens[keep:], returning=returning)
        place.job = job
        place.owner = affinity
        self._jobs.append(job)
        self._send(request, STARTED)

    def _place_for(self, affinity: str | None, tokens: list[int]) -> tuple[_Place, bool]:
        """A free place for a request with prompt ``tokens``, and whether it holds ``affinity``'s KV.

        Sequence ids in use are kept in as few consecutive runs as possible: llama.cpp splits a
        batch into one micro-batch per run of consecutive ids (each a full pass over the weights).
        Among the places that keep the runs fewest, the conversation's own place wins; otherwise
        its KV moves to the chosen place (a copy through RAM, far cheaper than reading it again).
        Then, for a conversation with no saved state: a place holding its whole prompt (the same
        question in a new conversation: llama.cpp's server also picks a slot by prompt
        similarity), owned or not; then an unowned place (nothing to save), the one holding the
        longest part of its prompt first. Then the least recently used, then low ids. A prefix
        shared with another place or a saved state is copied in afterwards
        (:meth:`_borrow_prefix`), so prompts that new conversations could start from are not
        overwritten before they are needed.
        """
        free = [place for place in self._places if place.job is None]
        active = {place.seq for place in self._places if place.job is not None}
        runs = {place.seq: _runs(active | {place.seq}) for place in free}
        fewest = min(runs.values())
        fits = [place for place in free if runs[place.seq] == fewest]
        mine = [place for place in free if affinity is not None and place.owner == affinity]
        own = max(mine, key=lambda place: place.last_used) if mine else None
        if own is not None and own in fits:
            return own, True
        fresh = own is None and (affinity is None or affinity not in self.cache)

        def rank(place: _Place) -> tuple[bool, bool, int, float, int]:
            shared = _common_prefix(place.tokens, tokens) if fresh else 0
            whole = fresh and shared >= len(tokens) - 1
            owned = place.owner is not None
            longer = -shared if shared >= MIN_SHARED_PREFIX and not owned else 0
            return (not whole, owned, longer, place.last_used, place.seq)

        target = min(fits, key=rank)
        self._evict(target)
        if own is None:
            return target, False
        if self.context.load(target.seq, self.context.save(own.seq)):
            target.tokens = list(own.tokens)
            own.owner = None  # its copy stays, unowned, for whoever shares its prefix
            self._counts["kv_moves"] += 1
            return target, True
        target.tokens = []
        return own, True

    def _borrow_prefix(self, place: _Place, tokens: list[int]) -> None:
        """Start ``place`` from a copy of the state sharing the longest prefix with ``tokens``: another
        sequence's, or one saved in the RAM cache (which stays there for its own conversation).

        Every new conversation begins with the same system prompt (and a channel's persona), which
        another sequence has usually decoded already, and the same question asked again shares all
        of its prompt with a conversation that asked it. Copying a state through RAM and cutting it
        back to the shared prefix costs about 0.1 ms per token of the copied state; reading the
        prefix again costs about 2.5 ms per token on 2 cores. A copy is made only when it saves at
        least :data:`MIN_SHARED_PREFIX` tokens and is the cheaper of the two.
        """
        have = _common_prefix(place.tokens, tokens)
        best, shared = None, have
        for other in self._places:
            if other is place or not other.tokens:
                continue
            common = _common_prefix(other.tokens, tokens)
            if common > shared:
                best, shared = other, common
        saved = self.cache.longest_prefix(tokens)
        kept: SavedState | None = None
        if saved is not None and saved[1] > shared:
            kept, shared = saved
            source = list(kept.tokens)
        elif best is not None:
            source = best.tokens[:]  # a running job appends to its tokens after the next decode only
        else:
            return
        if shared - have < MIN_SHARED_PREFIX or len(source) > COPY_COST_RATIO * (shared - have):
            return
        if kept is not None:
            state = kept.state
        else:
            assert best is not None
            state = self.context.save(best.seq)
        if not self.context.load(place.seq, state):
            log.warning("copying a shared prompt prefix failed; reading it instead")
            self.context.truncate(place.seq, 0)
            place.tokens = []
            return
        place.tokens = source
        self._counts["kv_prefix_copies"] += 1

    def _evict(self, place: _Place) -> None:
        """Save the KV of ``place``'s conversation into the cache before someone else uses it."""
        if place.owner is not None and place.tokens:
            self.cache.put(place.owner, SavedState(tuple(place.tokens), self.context.save(place.seq)))
            self._counts["kv_saves"] += 1
        place.owner = None

    def _restore(self, place: _Place, affinity: str) -> bool:
        found = self.cache.take(affinity)
        if found is None:
            return False
        saved, tier = found
        if not self.context.load(place.seq, saved.state):
            log.warning("the saved KV state of %s did not load; reading its history again", affinity)
            self.cache.discard(affinity)
            place.tokens = []
            self._counts["kv_load_failures"] += 1
            return False
        place.tokens = list(saved.tokens)
        self._counts["kv_restores_" + tier] += 1
        return True

    def _compact(self) -> None:
        """Close a gap in the sequence ids in use by moving the highest running sequence down.

        Replies end at different times, so the ids still generating drift apart, and llama.cpp
        makes one pass over the weights per run of consecutive ids: measured here, 4 sequences
        took 27 ms a step as 0-3 and 44 ms as 0, 2, 4, 6. Moving a sequence (its KV through RAM,
        about 0.1 ms per token, plus saving the KV a finished conversation kept in the gap) pays
        for itself within a few steps; it is done only while the reply may still run long enough
        (:data:`MOVE_TOKENS_PER_STEP`), one move per step.
        """
        active = {place.seq for place in self._places if place.job is not None}
        if _runs(active) <= 1:
            return
        top = max(active)
        target = min((place for place in self._places if place.job is None and place.seq < top), key=lambda p: p.seq)
        source = self._places[top]
        job = source.job
        assert job is not None
        remaining = job.request.params.max_tokens - job.generated
        cost = len(source.tokens) + (len(target.tokens) if target.owner is not None else 0)
        if cost > MOVE_TOKENS_PER_STEP * remaining:
            return
        self._evict(target)
        if not self.context.load(target.seq, self.context.save(source.seq)):
            log.warning("moving a running sequence to close a gap failed; it stays where it is")
            self.context.truncate(target.seq, 0)
            target.tokens = []
            return
        target.tokens, target.owner, target.job = list(source.tokens), source.owner, job
        job.place = target
        source.job, source.owner = None, None  # its copy stays, unowned, for whoever shares its prefix
        self._counts["kv_moves"] += 1

    def _step(self) -> None:
        if not self._jobs:
            self._flush()  # what ended in _next (a cancel, a failed start) goes out before reading ahead
            self._close_turn()
            return
        self._compact()
        batch = self._batch
        batch.clear()
        sample: list[tuple[_Job, int]] = []
        batched: list[_Job] = []
        for job in sorted(self._jobs, key=lambda job: job.place.seq):
            if job.next_token is not None:
                place = job.place
                sample.append((job, batch.add(job.next_token, len(place.tokens), place.seq, logits=True)))
                place.tokens.append(job.next_token)
                job.next_token = None
                batched.append(job)
        budget = self.prompt_chunk
        reading = False
        for job in self._jobs:
            if budget == 0:
                break
            if not job.pending:
                continue
            place, chunk = job.place, job.pending[:budget]
            job.pending = job.pending[len(chunk) :]
            last = len(chunk) - 1
            for i, token in enumerate(chunk):
                index = batch.add(token, len(place.tokens) + i, place.seq, logits=i == last and not job.pending)
            place.tokens.extend(chunk)
            batched.append(job)
            reading = True
            budget -= len(chunk)
            self._counts["prompt_tokens_decoded"] += len(chunk)
            if not job.pending:
                sample.append((job, index))
        if not len(batch):
            self._flush()
            return
        ahead = None if reading else self._ahead(batch, budget)
        self._counts["steps"] += 1
        if self._urgent or time.perf_counter() - self._posted_at >= POST_GAP:
            self._flush()
        status = self.context.decode(batch)
        if ahead is not None:
            self._ahead_done(ahead, status)
        if status != 0:
            for job in batched:
                self._fail(job, EngineError(f"llama_decode failed ({status})"))
            return
        for job, index in sample:
            self._accept(job, job.sampler.sample(self.context, index))
        self._worked_at = time.monotonic()

    def _current(self, entry: _Closing) -> bool:
        """Whether ``entry``'s place still holds its turn as it left it (not taken, moved or
        forgotten since, and with room for the tail); if not, its next turn reads the suffix."""
        place = entry.place
        return (
            place.job is None
            and place.owner == entry.owner
            and len(place.tokens) == entry.length
            and entry.length + len(entry.tail) <= self._n_ctx_seq
        )

    def _ahead(self, batch: Batch, room: int) -> _Closing | None:
        """Add the whole tail of the first finished turn of a returning conversation to ``batch``
        (a step in which other replies generate), if ``room`` takes it; the entry added. Runs every
        such step, so it allocates nothing: stale entries go when idle (:meth:`_close_turn`)."""
        for entry in self._closing:
            if entry.returning and len(entry.tail) <= room and self._current(entry):
                for i, token in enumerate(entry.tail):
                    batch.add(token, entry.length + i, entry.place.seq, logits=False)
                return entry
        return None

    def _ahead_done(self, entry: _Closing, status: int) -> None:
        self._closing.remove(entry)
        place = entry.place
        if status == 0:
            place.tokens.extend(entry.tail)
            self._counts["busy_ahead_tokens"] += len(entry.tail)
        else:
            self.context.truncate(place.seq, entry.length)  # its next turn reads the suffix

    def _close_turn(self) -> None:
        """Decode the next token of the template suffix of a finished turn whose place is still its
        own: one token, so that a request arriving now waits at most one single-token step."""
        while self._closing:
            entry = self._closing[0]
            place = entry.place
            if not self._current(entry):
                self._closing.pop(0)
                continue
            token = entry.tail.pop(0)
            batch = self._batch
            batch.clear()
            batch.add(token, entry.length, place.seq, logits=False)
            self._counts["steps"] += 1
            status = self.context.decode(batch)
            if status == 0:
                place.tokens.append(token)
                entry.length += 1
                self._counts["idle_tokens"] += 1
            else:
                self.context.truncate(place.seq, entry.length)
                entry.tail.clear()
                log.warning("decoding the end of a finished turn ahead failed (%s); its next turn reads it", status)
            if not entry.tail:
                self._closing.pop(0)
            return

    def _accept(self, job: _Job, token: int) -> None:
        if self.model.is_end(token):
            self._finish(job, "stop", tail=self._suffix)
            return
        job.generated += 1
        text = job.text.decode(self.model.piece(token))
        if text:
            self._send(job.request, text, urgent=not job.shown)
            job.shown = True
        if job.generated >= job.request.params.max_tokens:
            self._finish(job, "length", tail=[token, *self._suffix])
        else:
            job.next_token = token

    def _finish(self, job: _Job, reason: str, *, tail: list[int] | None = None) -> None:
        """End ``job`` for ``reason``; ``tail``: what the conversation's next prompt is expected to
        continue its KV with (the reply's undecoded last token and the template's suffix)."""
        rest = job.text.decode(b"", final=True)
        if rest and reason != "cancelled":
            self._send(job.request, rest)
        usage = job.request.usage
        usage.completion_tokens = job.generated
        usage.finish_reason = reason
        usage.seconds = time.perf_counter() - job.started
        self._counts["completion_tokens"] += job.generated
        self._end(job, finished=reason != "cancelled")
        place = job.place
        if tail and self._suffix and job.keep and place.owner is not None:
            self._closing = [entry for entry in self._closing if entry.place is not place]
            self._closing.append(_Closing(place, place.owner, len(place.tokens), list(tail), job.returning))
        self._send(job.request, DONE)

    def _fail(self, job: _Job, error: EngineError) -> None:
        job.keep = False  # its KV may be half written: nothing may reuse it
        self._end(job)
        self._send(job.request, error)

    def _end(self, job: _Job, *, finished: bool = False) -> None:
        job.sampler.close()
        place = job.place
        place.job = None
        place.last_used = time.monotonic()
        if not job.keep:
            place.owner = None
            self.context.truncate(place.seq, 0)
            place.tokens = []
        self._jobs.remove(job)
        self._release(job.request, finished=finished)

    def _release(self, request: Request, *, finished: bool = False) -> None:
        """``request`` gives its place back; a ``finished`` one's time is measured for estimates."""
        with self._lock:
            self._running -= 1
            admitted = self._admitted.pop(request, None)
            if finished and admitted is not None and request.measured:
                self._times.record(time.perf_counter() - admitted)

    def _send(self, request: Request, item: object, *, urgent: bool = True) -> None:
        """Queue ``item`` for ``request``'s consumer; the worker posts it with :meth:`_flush`, in the
        next step unless it is a text delta that can wait (see :data:`POST_GAP`)."""
        self._outbox.append((request, item))
        self._urgent = self._urgent or urgent

    def _flush(self) -> None:
        """Post the queued results: one call per event loop, in the order they came, a request's
        consecutive text deltas as one."""
        self._urgent = False
        if not self._outbox:
            return
        self._posted_at = time.perf_counter()
        outbox, self._outbox = self._outbox, []
        by_loop: dict[Callable[[Callable[[], None]], object], list[tuple[Callable[[object], None], object]]] = {}
        text_at: dict[Request, int] = {}
        for request, item in outbox:
            items = by_loop.setdefault(request.post, [])
            if isinstance(item, str):
                at = text_at.get(request)
                if at is not None:
                    items[at] = (request.emit, str(items[at][1]) + item)
                    continue
                text_at[request] = len(items)
            else:
                text_at.pop(request, None)
            items.append((request.emit, item))
        for post, items in by_loop.items():
            _post(post, functools.partial(_deliver, items))

    def _report_waiting(self) -> None:
        """Tell each waiting request its new place in line (called with the lock held, so the reports of
        one request reach it in order)."""
        now = time.perf_counter()
        running = [now - since for since in self._admitted.values()]
        for position, request in enumerate(self._waiting, 1):
            if request.position != position:
                request.position = position
                _tell(request, QueueStatus(position, self._times.eta(position, running, self.parallel)))

    def _shutdown(self) -> None:
        for job in list(self._jobs):
            self._finish(job, "cancelled")
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
            self._stopping = True
        self._flush()
        for request in waiting:
            request.usage.finish_reason = "cancelled"
            _tell(request, DONE)
        try:
            if self.cache.persistent:  # keep the conversations for the next start
                for place in self._places:
                    if place.owner is not None and place.tokens:
                        self.cache.put(place.owner, SavedState(tuple(place.tokens), self.context.save(place.seq)))
                self.cache.flush()
        finally:
            self._batch.close()
            self.context.close()


def _deliver(items: list[tuple[Callable[[object], None], object]]) -> None:
    for emit, item in items:
        emit(item)


def _tell(request: Request, item: object) -> None:
    """Post ``item`` to ``request``'s consumer now (not from the worker's steps)."""
    _post(request.post, functools.partial(request.emit, item))


def _post(post: Callable[[Callable[[], None]], object], callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
        post(callback)


def _runs(ids: set[int]) -> int:
    """Runs of consecutive integers in ``ids``: {0, 1, 2, 5, 7} has 3."""
    return sum(1 for i in ids if i - 1 not in ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
