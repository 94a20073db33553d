"""The chat service: from a user's message to a stored, delivered reply.

:meth:`ChatService.exchange` is the one pipeline every channel uses: it stores the user's turn,
builds the prompt from the conversation's history (:mod:`bot.prompt`), streams the engine's reply and stores it as it
grows. Platform connectors reach it through :meth:`ChatService.submit`, which queues the message
per conversation (a user's second message waits for the first reply; nothing is dropped or
interleaved) and streams the answer with a :class:`~bot.streamer.ReplyStreamer`. The web API
calls :meth:`ChatService.exchange` directly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.attachments import Reading, read_attachments
from bot.command import Command
from bot.commands import CommandRunner
from bot.connector import Connector
from bot.conversation import CommandRequest, ConversationKey, Destination, IncomingMessage, Quote, conversation_key
from bot.engine import ChatMessage, Engine, GenerationParams, Image, QueueStatus, Usage
from bot.errors import ParleyError, RateLimited
from bot.exchange import Exchange
from bot.inbox import Inbox, InboxEntry, InboxState
from bot.listen import Heard, Listener
from bot.logs import reply_context
from bot.memory import NoteBook, Notes, Owner
from bot.metrics import Metrics
from bot.models import Engines
from bot.plugin import MessageContext, Middleware, Next, Plugin, Replier, chain
from bot.prompt import PromptParts, build_prompt, fit_files, last_answer, quote_line, with_files
from bot.settings import DEFAULT_MODEL, Settings
from bot.store import ChannelSettings, ChannelStats, Store, Turn, TurnStatus
from bot.streamer import ReplyStreamer
from bot.waiting import describe, notices

log = logging.getLogger(__name__)

SHUTDOWN_NOTICE = "Parley is restarting and cannot take this message; please send it again in a minute."
OUTCOMES = {
    TurnStatus.COMPLETE: "complete",
    TurnStatus.STOPPED: "stopped",
    TurnStatus.INTERRUPTED: "interrupted",
    TurnStatus.FAILED: "error",
}
"""How a reply ended, as the ``parley_replies`` metric counts it."""


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def error_note(exc: BaseException) -> str:
    """The short line a chat user sees when their reply failed."""
    message = exc.user_message if isinstance(exc, ParleyError) else ParleyError.user_message
    return f"⚠️ {message}"


class _KeyedLocks:
    """One FIFO lock per conversation, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[ConversationKey, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: ConversationKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ChatService:
    """Answers messages. ``drain()`` stops intake and waits (bounded) for running replies."""

    def __init__(self, settings: Settings, store: Store, engines: Engines, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engines = engines
        self.metrics = metrics or Metrics()
        self.metrics.watch(engines.metrics, self._load)
        self.accepting = True
        self._locks = _KeyedLocks()
        self._tasks: set[asyncio.Task[object]] = set()
        self._queues: dict[ConversationKey, collections.deque[tuple[InboxEntry, Connector | None]]] = {}
        self.running: dict[ConversationKey, Exchange] = {}
        """The reply being generated in each conversation (``/stop`` ends it)."""
        self.inbox = Inbox(store)
        self.notes = Notes(store, settings.memory_notes)
        self.listener = Listener(store, settings.listen)
        self._opened = asyncio.Event()
        self.middlewares: list[Middleware] = []
        self.commands = CommandRunner(self, self.guard, self.key_for)

    def _load(self) -> dict[str, float]:
        return {
            "inbox": sum(len(queue) for queue in self._queues.values()),
            "active": len(set(self._queues) | set(self.running)),
        }

    def _meter(self, connector: Connector) -> Callable[[str, bool], None]:
        """Counts a connector's calls (and 429s) by method, for the reply streamer."""

        def count(method: str, rate_limited: bool) -> None:
            self.metrics.platform_calls.labels(connector.name, method).inc()
            if rate_limited:
                self.metrics.rate_limited.labels(connector.name, method).inc()

        return count

    def streamer(self, connector: Connector, destination: Destination, resume: tuple[str, ...] = ()) -> ReplyStreamer:
        """A reply streamer for ``connector`` whose calls are counted."""
        return ReplyStreamer(connector, destination, resume=resume, on_call=self._meter(connector))

    # parameters and prompts

    def params(
        self, *, max_tokens: int | None = None, temperature: float | None = None, model: str = DEFAULT_MODEL
    ) -> GenerationParams:
        """Generation parameters of ``model`` (its ``MAX_TOKENS`` caps ``max_tokens``)."""
        engine = self.settings.model_settings(model)
        return GenerationParams(
            max_tokens=min(max_tokens or engine.max_tokens, engine.max_tokens),
            temperature=engine.temperature if temperature is None else temperature,
            top_p=engine.top_p,
            seed=engine.seed,
        )

    def system_prompt(self, key: ConversationKey) -> str:
        """The channel's ``/system`` prompt, else the persona answering in ``key``, else the default."""
        channel = self.store.channel_settings(key.platform, key.channel)
        if channel.system_prompt is not None:
            return channel.system_prompt
        persona = self.persona_of(key)
        return self.settings.personas[persona] if persona is not None else self.settings.system_prompt

    def persona_of(self, key: ConversationKey) -> str | None:
        """The persona answering in ``key``: the conversation's choice unless the channel is locked, else
        the channel's default; ``None`` for the default prompt. A name no longer configured is skipped."""
        channel = self.store.channel_settings(key.platform, key.channel)
        chosen = None if channel.persona_locked else self.store.conversation_persona(key)
        for name in (chosen, channel.persona):
            if name is not None and name in self.settings.personas:
                return name
        return None

    def allowed_models(self, platform: str, channel: str) -> list[str]:
        """The models users may choose in the channel: its list (every model unless an admin set one) and
        its default, in configured order; names no longer configured are skipped."""
        settings = self.store.channel_settings(platform, channel)
        listed = set(self.settings.model_names if settings.models is None else settings.models)
        listed.add(self.channel_model(platform, channel))
        return [name for name in self.settings.model_names if name in listed]

    def channel_model(self, platform: str, channel: str) -> str:
        """The channel's default model (``/model default``); ``default`` unless set and still configured."""
        chosen = self.store.channel_settings(platform, channel).model
        return chosen if chosen is not None and chosen in self.engines.specs else DEFAULT_MODEL

    def model_of(self, key: ConversationKey) -> str:
        """The model answering in ``key``: the conversation's choice (``/model``) while the channel allows it,
        else the channel's default."""
        chosen = self.store.conversation_model(key)
        if chosen is not None and chosen in self.allowed_models(key.platform, key.channel):
            return chosen
        return self.channel_model(key.platform, key.channel)

    async def has_conversation(self, key: ConversationKey) -> bool:
        return await self.store.find_conversation(key) is not None

    def key_for(self, message: IncomingMessage) -> ConversationKey:
        scope = self.store.channel_settings(message.platform, message.channel).scope
        return conversation_key(message, scope)

    @staticmethod
    def prompt(
        system_prompt: str,
        history: list[Turn],
        *,
        shared: bool = False,
        new: Turn | None = None,
        quote: str = "",
        heard: Sequence[Heard] = (),
        heard_chars: int = 0,
    ) -> list[ChatMessage]:
        """The model's messages for ``history`` and then the ``new`` user turn: :func:`bot.prompt.build_prompt`."""
        parts = PromptParts(system_prompt, history, new, shared, quote, heard, heard_chars)
        return build_prompt(parts)

    # the pipeline

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        key: ConversationKey,
        text: str,
        params: GenerationParams | None = None,
        *,
        conversation_id: str | None = None,
        requester: str | None = None,
        entry: int | None = None,
        author_name: str = "",
        quote: Quote | None = None,
        files: str = "",
        images: Sequence[Image] = (),
    ) -> AsyncIterator[Exchange]:
        """Store ``text`` as the user's turn and stream the reply; waits for the conversation's turn.

        ``files`` (:meth:`bot.attachments.Reading.section`) follows the text in the stored turn, so
        later turns see the files too; ``images`` go with this turn's prompt only and are not stored.

        The turn's author is ``requester`` (the user id) with display name ``author_name``; in a
        shared conversation (no user in ``key``) the model sees who wrote each turn. ``quote`` (the
        message replied to) goes into this turn's prompt, trimmed; the stored turn is ``text`` alone.

        ``entry`` is the inbox entry the reply answers: its turns are noted there, so that an
        answer cut off by a crash can be replaced by a complete one after the restart.
        """
        async with self._locks.hold(key), self._engine_for(key) as (model, engine):
            conversation_id = await self.store.conversation(key, create_id=conversation_id)
            history = await self.store.history(conversation_id)
            author = requester or ""
            stored = with_files(text, files)
            user_turn = await self.store.add_turn(
                conversation_id, "user", stored, author=author, author_name=author_name, inbox_entry=entry
            )
            new = Turn(user_turn, "user", stored, 0, time.time(), TurnStatus.COMPLETE, (), 0.0, author, author_name)
            since = max(last_answer(history), await self.store.reset_time(conversation_id))
            parts = PromptParts(
                self.system_prompt(key),
                history,
                new,
                shared=key.user is None,
                quote=quote_line(quote, self.settings.quote_chars),
                heard=await self.listener.window(key, since=since),
                heard_chars=self.settings.listen.chars,
                recalled=await self.notes.recall(key, author, text, self.settings.memory_tokens),
                images=tuple(images),
            )
            messages = build_prompt(parts)
            turn_id = await self.store.add_turn(
                conversation_id, "assistant", "", status=TurnStatus.STREAMING, inbox_entry=entry
            )
            if params is None:
                params = self.params(model=model)
            else:  # the caller's (the web API's) limits, within this model's
                cap = self.settings.model_settings(model).max_tokens
                params = dataclasses.replace(params, max_tokens=min(params.max_tokens, cap))
            reply = engine.generate(messages, params, affinity=conversation_id)
            exchange = Exchange(conversation_id, turn_id, reply, self.store, requester)
            self.running[key] = exchange
            status = TurnStatus.FAILED
            with reply_context(conversation_id=conversation_id):
                try:
                    yield exchange
                    status = TurnStatus.COMPLETE
                except asyncio.CancelledError:
                    status = TurnStatus.INTERRUPTED
                    raise
                finally:
                    if exchange.stopped:
                        status = TurnStatus.STOPPED
                    del self.running[key]
                    await reply.aclose()
                    usage = reply.usage
                    await asyncio.shield(self._finish(exchange, user_turn, status, usage, key.platform))

    @contextlib.asynccontextmanager
    async def _engine_for(self, key: ConversationKey) -> AsyncIterator[tuple[str, Engine]]:
        """The model answering in ``key`` and its engine, held while the reply runs."""
        model = self.model_of(key)
        async with self.engines.use(model) as engine:
            yield model, engine

    def running_for(self, key: ConversationKey, user: str) -> Exchange | None:
        """The reply running in ``key``, else one ``user`` asked for elsewhere in the same channel.

        A command may arrive under another key than the reply it is about: a Slack slash command
        carries no thread, while the mention it should stop is answered in one.
        """
        if key in self.running:
            return self.running[key]
        for other, exchange in self.running.items():
            if (other.platform, other.channel) == (key.platform, key.channel) and exchange.requester == user:
                return exchange
        return None

    async def _finish(
        self, exchange: Exchange, user_turn: int, status: TurnStatus, usage: Usage, platform: str
    ) -> None:
        self._measure(exchange, status, usage, platform)
        await self.store.update_turn(
            exchange.turn_id,
            text=exchange.text,
            token_count=usage.completion_tokens,
            status=status,
            message_ids=exchange.message_ids,
            seconds=usage.seconds,
        )
        user_status = TurnStatus.FAILED if status is TurnStatus.FAILED else TurnStatus.COMPLETE
        await self.store.update_turn(user_turn, token_count=usage.prompt_tokens, status=user_status)

    def _measure(self, exchange: Exchange, status: TurnStatus, usage: Usage, platform: str) -> None:
        metrics = self.metrics
        outcome = OUTCOMES.get(status, "error")
        log.info(
            "reply %s: %d prompt + %d generated tokens in %.2f s",
            outcome,
            usage.prompt_tokens,
            usage.completion_tokens,
            time.monotonic() - exchange.started_at,
        )
        metrics.replies.labels(platform, outcome).inc()
        if exchange.first_token_at is not None:
            metrics.first_token.labels(platform).observe(exchange.first_token_at - exchange.started_at)
        metrics.reply_seconds.labels(platform).observe(time.monotonic() - exchange.started_at)
        metrics.tokens.labels("prompt").inc(usage.prompt_tokens)
        metrics.tokens.labels("generated").inc(usage.completion_tokens)

    # plugins

    def install(self, plugins: Sequence[Plugin]) -> None:
        """Take the middleware and commands of ``plugins`` (called once, before start)."""
        self.middlewares = [middleware for plugin in plugins for middleware in plugin.router.middlewares]
        self.commands = CommandRunner(self, self.guard, self.key_for, frozenset(self.settings.admins), plugins)

    def is_admin(self, message: IncomingMessage) -> bool:
        return message.is_admin or f"{message.platform}:{message.user}" in self.settings.admins

    async def guard(
        self, message: IncomingMessage, handler: Next, tell: Callable[[str], Awaitable[None]], is_command: bool
    ) -> str | None:
        """Handle ``message`` with ``handler`` inside the plugins' middleware; the reply text, if any."""
        memory = self.memory(message.platform, user=message.user) if message.user else None
        context = MessageContext(self.settings, self.is_admin(message), is_command, tell, self.metrics, memory)
        return await chain(self.middlewares, handler, context)(message)

    # what plugins may do (bot.plugin.PluginHost)

    @property
    def default_system_prompt(self) -> str:
        return self.settings.system_prompt

    def engine_status(self) -> str:
        return self.engines.status()

    async def stream_answer(
        self, key: ConversationKey, prompt: str, requester: str, replier: Replier, requester_name: str = ""
    ) -> str:
        async with self.exchange(key, prompt, requester=requester, author_name=requester_name) as exchange:
            return await replier.stream(exchange)

    def stop_reply(self, key: ConversationKey, user: str) -> bool:
        running = self.running_for(key, user)
        if running is None:
            return False
        running.stop()
        return True

    async def reset(self, key: ConversationKey) -> None:
        conversation = await self.store.conversation(key)
        await self.store.reset(conversation)
        self.engines.forget(conversation)

    def channel_settings(self, platform: str, channel: str) -> ChannelSettings:
        return self.store.channel_settings(platform, channel)

    @property
    def personas(self) -> Mapping[str, str]:
        return self.settings.personas

    def conversation_persona(self, key: ConversationKey) -> str | None:
        return self.store.conversation_persona(key)

    async def set_conversation_persona(self, key: ConversationKey, persona: str | None) -> None:
        await self.store.set_conversation_persona(key, persona)

    @property
    def models(self) -> Mapping[str, str]:
        return {name: spec.describe() for name, spec in self.engines.specs.items()}

    def model_status(self, name: str) -> str:
        return self.engines.status(name)

    def conversation_model(self, key: ConversationKey) -> str | None:
        return self.store.conversation_model(key)

    async def set_conversation_model(self, key: ConversationKey, model: str | None) -> None:
        await self.store.set_conversation_model(key, model)

    def memory(self, platform: str, *, user: str = "", channel: str = "") -> NoteBook:
        return self.notes.book(Owner(platform, user, channel))

    async def set_channel_settings(self, platform: str, channel: str, settings: ChannelSettings) -> None:
        """Change the channel's settings; turning listen mode off deletes what the channel kept."""
        listened = self.store.channel_settings(platform, channel).listen
        await self.store.set_channel_settings(platform, channel, settings)
        if listened and not settings.listen:
            forgotten = await self.listener.forget(platform, channel)
            log.info("listen mode off in %s:%s: deleted %d kept messages", platform, channel, forgotten)

    async def channel_stats(self, platform: str, channel: str) -> ChannelStats:
        return await self.store.channel_stats(platform, channel)

    # messages: inbox first, then one queue per conversation

    def submit(self, message: IncomingMessage, connector: Connector) -> None:
        """Take ``message`` for an answer through ``connector``; returns at once (see :meth:`receive`)."""
        if message.addressed or self.listening(message.platform, message.channel):
            self.spawn(self.receive(message, connector))

    def listening(self, platform: str, channel: str) -> bool:
        """Whether ``channel`` keeps messages not addressed to the bot (``/listen``): a connector
        then looks up their authors' names as for addressed ones."""
        return self.listener.listening(platform, channel)

    async def receive(self, message: IncomingMessage, connector: Connector) -> bool:
        """Store ``message`` in the inbox, then queue it; ``False`` if it is not taken (not addressed,
        delivered before, or the bot is shutting down).

        A message not addressed to the bot never reaches the inbox: a listening channel keeps it
        as context (``bot.listen``), and it is not answered. It passes the plugins' middleware
        first, as every message does, so a middleware that stops it (a blocked user) keeps it out;
        notes a middleware tells about it go nowhere, since nobody asked the bot anything.

        Messages of one conversation are answered one after the other, in arrival order.
        """
        if not message.addressed:
            await self._overhear(message)
            return False
        if not self.accepting:
            await self.notify(connector, message.destination, SHUTDOWN_NOTICE)
            return False
        entry = await self.inbox.add(message)
        if entry is None:
            log.info(
                "%s message %s in %s came again; it is answered once",
                message.platform,
                message.message_id,
                message.channel,
            )
            return False
        self._enqueue(InboxEntry(entry, message, InboxState.PENDING), connector)
        return True

    async def _overhear(self, message: IncomingMessage) -> None:
        if not self.listening(message.platform, message.channel):
            return

        async def keep(heard: IncomingMessage) -> None:
            await self.listener.hear(heard)

        async def nobody(_note: str) -> None:
            return None

        try:
            await self.guard(message, keep, nobody, False)
        except Exception:  # chatter: a failing middleware costs this message's context, nothing else
            log.exception("a message middleware failed on unaddressed %s in %s", message.message_id, message.channel)

    async def resume(self, connectors: Sequence[Connector]) -> int:
        """Answer what the inbox holds from before a restart, in order per conversation.

        An answer that a crash cut off is answered again in full: its stored attempt leaves the
        history, and the messages it had posted are reused for the new text. Entries of a channel
        without a connector (the web API) are answered into the store.
        """
        by_platform = {connector.name: connector for connector in connectors}
        entries = await self.inbox.open_entries()
        for entry in entries:
            await self.store.supersede(entry.id, entry.turn_ids)
            self._enqueue(entry, by_platform.get(entry.message.platform))
        if entries:
            log.info("answering %d messages stored before the restart", len(entries))
        return len(entries)

    def _enqueue(self, entry: InboxEntry, connector: Connector | None) -> None:
        key = self.key_for(entry.message)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self.spawn(self._work(key, queue))
        queue.append((entry, connector))

    def open(self) -> None:
        """Start answering: once the connectors are up (messages queue until then)."""
        self._opened.set()

    async def _work(self, key: ConversationKey, queue: collections.deque[tuple[InboxEntry, Connector | None]]) -> None:
        try:
            await self._opened.wait()
            while queue:
                entry, connector = queue[0]
                try:
                    await self._handle(entry, connector, key)
                finally:
                    queue.popleft()
        finally:
            del self._queues[key]

    async def _handle(self, entry: InboxEntry, connector: Connector | None, key: ConversationKey) -> None:
        message = entry.message
        answered = False

        async def answer(verdict: IncomingMessage) -> str:
            nonlocal answered
            answered = True
            if connector is None:
                return await self.answer_quietly(verdict, key, entry.id)
            return await self.answer(verdict, connector, key, entry)

        async def tell(note: str) -> None:
            if connector is not None:
                await self.notify(connector, message.destination, note)

        try:
            # Every line logged about this message names it and its conversation (made if new).
            conversation_id = await self.store.conversation(key)
            with reply_context(
                platform=message.platform,
                conversation_id=conversation_id,
                message_id=message.message_id or str(entry.id),
            ):
                await self.process(entry.id, message, answer, tell)
        except Exception as exc:
            log.exception("a message middleware failed on %s in %s", message.message_id, key)
            if not answered:  # after the reply, the user already has their answer
                await tell(error_note(exc))

    async def process(
        self, entry: int, message: IncomingMessage, answer: Next, tell: Callable[[str], Awaitable[None]]
    ) -> str | None:
        """Answer inbox ``entry`` (holding ``message``) with ``answer`` inside the plugins' middleware.

        The entry is done once this returns or raises; if it is cancelled (a shutdown that
        outlasted its grace) it stays open and is answered after the restart.
        """
        await self.inbox.answering(entry)
        try:
            return await self.guard(message, answer, tell, False)
        finally:
            if not _cancelling():
                await self.inbox.done(entry)

    @property
    def command_list(self) -> list[Command]:
        return self.commands.commands

    def submit_command(self, request: CommandRequest, connector: Connector) -> None:
        """Run a command received by ``connector``; returns at once (commands are not queued)."""
        if not self.accepting:
            self.spawn(self.notify(connector, request.reply_destination(), SHUTDOWN_NOTICE))
            return
        self.spawn(self.commands.run(request, ConnectorReplier(self, connector, request.reply_destination())))

    def spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        """Run a coroutine as a tracked task that ``drain()`` waits for."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def answer(
        self, message: IncomingMessage, connector: Connector, key: ConversationKey, entry: InboxEntry
    ) -> str:
        """Answer one platform message, streaming the reply into the chat; return the reply text.

        The placeholder goes out at once, before waiting for the engine, and its id is kept in the
        inbox entry; any failure ends up as a short note in that message.
        """
        streamer = self.streamer(connector, message.destination, entry.reply_ids)
        reading = Reading()
        if message.attachments:
            try:
                reading = await self.read_files(message, key)
            except ParleyError as exc:  # the model answering here could not load: say so, as a reply would
                log.warning("reading the files of %s in %s failed: %s", message.message_id, key, exc)
                await self.notify(connector, message.destination, error_note(exc))
                return ""
            if reading.notes:
                await self.notify(connector, message.destination, "\n".join(reading.notes))
            if not (message.text.strip() or reading.files or reading.images):
                return ""  # the notes were the whole answer: nothing was left to read
        try:
            await streamer.start()
            await self.inbox.replied_in(entry.id, streamer.message_ids)
            async with self.exchange(
                key,
                message.text,
                requester=message.user,
                entry=entry.id,
                author_name=message.user_name,
                quote=message.quote,
                files=reading.section(),
                images=reading.images,
            ) as exchange:

                async def progress(_text: str, ids: tuple[str, ...]) -> None:
                    await exchange.save_progress(message_ids=ids)
                    await self.inbox.replied_in(entry.id, ids)

                streamer.on_progress = progress
                return await self.deliver(exchange, streamer)
        except ParleyError as exc:
            log.warning("reply to %s in %s failed: %s", message.message_id, key, exc)
            await self._abort(streamer, exc)
        except Exception as exc:
            log.exception("reply to %s in %s failed", message.message_id, key)
            await self._abort(streamer, exc)
        return ""

    async def read_files(self, message: IncomingMessage, key: ConversationKey) -> Reading:
        """Read ``message``'s files, their texts cut so that the turn fits the context window.

        The room is the context of the model answering in ``key`` less its longest reply, the memory
        notes and a quoted message; the prompt is counted with that engine's own tokenizer and the
        files' texts shrink in proportion.
        """
        async with self._engine_for(key) as (model, engine):
            reading = await read_attachments(
                message.attachments, self.settings.attachments, vision=engine.accepts_images
            )
            room = (
                engine.context_size
                - self.settings.model_settings(model).max_tokens
                - self.settings.memory_tokens
                - (self.settings.quote_chars // 2 if message.quote is not None else 0)
            )
            return await fit_files(
                reading, message.text, system=self.system_prompt(key), room=room, count=engine.count_tokens
            )

    async def answer_quietly(self, message: IncomingMessage, key: ConversationKey, entry: int) -> str:
        """Answer into the store only: a web API message whose client is gone after a restart."""
        try:
            async with self.exchange(
                key,
                message.text,
                requester=message.user,
                entry=entry,
                author_name=message.user_name,
                quote=message.quote,
            ) as exchange:
                async for _ in exchange:
                    pass
                return exchange.text
        except ParleyError as exc:
            log.warning("stored answer to a message in %s failed: %s", key, exc)
            return ""

    async def deliver(self, exchange: Exchange, streamer: ReplyStreamer) -> str:
        """Stream ``exchange`` through ``streamer``, saving the ids of the messages that carry it.

        While the reply waits for the engine longer than ``queue_notice_after``, the placeholder
        says where it stands in line (:mod:`bot.waiting`).
        """
        if streamer.on_progress is None:
            streamer.on_progress = lambda _text, ids: exchange.save_progress(message_ids=ids)

        async def queued(status: QueueStatus) -> None:
            await streamer.show_status(describe(status))

        try:
            async with notices(exchange.reply, queued, after=self.settings.queue_notice_after):
                await streamer.run(exchange, error_note=error_note)
        finally:
            self.metrics.edits_per_reply.labels(streamer.platform).observe(streamer.edits)
        return exchange.text

    @staticmethod
    async def _abort(streamer: ReplyStreamer, exc: BaseException) -> None:
        try:
            await streamer.abort(error_note(exc))
        except ParleyError as second:
            log.warning("could not tell the user their reply failed: %s", second)

    async def notify(self, connector: Connector, destination: Destination, text: str) -> None:
        """Send one short message, paced like any other."""
        try:
            async with connector.pacer.paced(destination.channel, connector.pacing(destination)):
                await connector.send(destination, text)
            self.metrics.platform_calls.labels(connector.name, "send").inc()
        except RateLimited as exc:
            self.metrics.rate_limited.labels(connector.name, "send").inc()
            log.warning("could not notify %s on %s: %s", destination.channel, connector.name, exc)
        except ParleyError as exc:
            log.warning("could not notify %s on %s: %s", destination.channel, connector.name, exc)

    async def join(self) -> None:
        """Wait until every message submitted so far (and any submitted meanwhile) is answered."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace: float) -> None:
        """Stop taking messages; let running replies finish for up to ``grace`` s, then cancel them."""
        self.accepting = False
        pending = set(self._tasks)
        if not pending:
            return
        log.info("waiting up to %.0fs for %d running replies", grace, len(pending))
        _, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)


@dataclass(slots=True)
class ConnectorReplier:
    """Answers a command on a platform: paced text, or a streamed reply via the reply streamer."""

    chat: ChatService
    connector: Connector
    destination: Destination

    async def text(self, text: str, *, ephemeral: bool = False) -> None:
        destination = dataclasses.replace(self.destination, ephemeral=ephemeral)
        await self.chat.notify(self.connector, destination, text)

    async def stream(self, exchange: Exchange) -> str:
        return await self.chat.deliver(exchange, self.chat.streamer(self.connector, self.destination))
