"""The Telegram connector, on python-telegram-bot with long polling.

Lifecycle, driven by hand rather than ``run_polling`` (which blocks and installs signal handlers):
``start`` runs ``initialize`` (``getMe``), registers the command menu (``setMyCommands``, see
:mod:`connectors.telegram.commands`), then ``updater.start_polling`` and ``start``; if any step
fails, what already started is stopped and the application shut down again.
Nothing is confirmed before it is stored: PTB's updater confirms a batch of updates by the
``offset`` of its next ``getUpdates``, as soon as it has queued them. The connector hands PTB an
update queue (:class:`StoredBeforeConfirmed`) whose ``put`` returns only once the application has
handled the update, and the handler awaits the sink's ``receive``, which stores the message in
the inbox; so an update is confirmed only after its message is in SQLite, and a crash in between
gets it again from Telegram (answered once: the inbox knows its id).
``pause_intake`` (the first step of the app's shutdown) stops the updater, which confirms to
Telegram only the updates already handled, then stops the application, which hands every queued
update to the sink first; updates fetched by a poll that was cut short are not confirmed and come
again on the next start. The bot itself stays open, so replies still streaming can send and edit
until ``stop`` shuts it down.

Commands (``/cmd args``, ``/cmd@bot args``) go to the sink's ``submit_command``; in groups the
caller's admin status comes from ``getChatMember`` (remembered ``admin_cache_seconds``) or from
posting anonymously as the group. Telegram has no ephemeral messages, so answers the core marks
ephemeral (refusals, usage) are replies to the command message like every other answer.

Pacing is the core's (:attr:`limits`): about one call per second per chat, in groups at most
``group_edits_per_minute``, and about 30 per second over all chats together (:data:`BOT_WIDE`).
No PTB rate limiter is installed; a 429 becomes :class:`~bot.errors.RateLimited` and the core waits.
Text is sent as HTML rendered from the Markdown (:mod:`connectors.telegram.render`); when Telegram
refuses the entities, or the rendering would not fit, the Markdown itself goes out as plain text,
so no text is lost to formatting.

Native streaming (:class:`DraftStream`): in a private chat each message of a reply is streamed as a
draft (``sendMessageDraft``, Bot API 9.3; open to every bot since PTB 22.7): an empty draft shows
"Thinking...", later ones with the same ``draft_id`` are animated, and the final text is sent with
``sendMessage`` (rendered as above), since a draft is only an ephemeral preview of about 30 s.
Telegram's documentation gives drafts no rate limit of their own; they are paced by
``PARLEY_TELEGRAM__DRAFT_INTERVAL`` per chat and count towards the bot-wide 30 per second. Groups
keep edits: drafts are for private chats only. A refusal (a Bot API server without the method
answers 404, others 400) is remembered for ``native_refusal_seconds``, and the reply goes on by
editing.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import random
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from telegram import (
    Bot,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, MessageLimit, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from bot.connector import (
    Connector,
    ConnectorLimits,
    InboundSink,
    NativeStream,
    Refusals,
    SentMessage,
    stop_on_failure,
)
from bot.conversation import Attachment, Destination
from bot.errors import ConfigError, ConnectorError, FileTooLarge, MessageTooLong, NativeRefused, RateLimited
from bot.pacing import Pacing
from bot.settings import TelegramSettings
from connectors.telegram.commands import ChatAdmins, CommandNames, TypedCommand, parse_command, telegram_admins
from connectors.telegram.inbound import (
    TelegramFile,
    files_of,
    is_private,
    sent_by_chat_admin,
    to_command_request,
    to_incoming,
)
from connectors.telegram.render import to_html, visible_length

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_API = "https://api.telegram.org"
TelegramApp = Application[Any, Any, Any, Any, Any, Any]
BOT_WIDE = Pacing(min_interval=1 / 30, window_calls=30, window_seconds=1.0)
"""Telegram's limit over all chats: about 30 messages per second per bot (the pacer stays below)."""
DRAFT_REFRESH = 20.0
"""Seconds after which an unchanged draft is sent again: Telegram shows a draft as "a temporary
30-second preview" (Bot API, ``sendMessageDraft``)."""
MAX_DRAFT_ID = 2**31 - 1


class StoredBeforeConfirmed(asyncio.Queue[object]):
    """PTB's update queue, whose ``put`` returns once the application has handled the update.

    The updater confirms what it fetched (the next ``getUpdates`` offset) right after putting it
    here, so it confirms only handled updates. It relies on the application calling
    ``task_done`` after each update, and on handling one update at a time
    (``concurrent_updates(False)``).
    """

    async def put(self, item: object) -> None:
        await super().put(item)
        await self.join()


def api_urls(settings: TelegramSettings) -> tuple[str, str]:
    """The Bot API and file URLs, each ready for PTB to append the token.

    ``base_url`` may be the server root (``http://host:8081``) or already end in ``/bot``; the
    file URL defaults to the same server's ``/file/bot``. A ``{token}`` placeholder is kept.
    """
    base = (settings.base_url or DEFAULT_API).rstrip("/")
    root = base.removesuffix("/bot")
    if "{token}" not in base and not base.endswith("/bot"):
        base = f"{base}/bot"
    files = (settings.base_file_url or f"{root}/file/bot").rstrip("/")
    if "{token}" not in files and not files.endswith("/bot"):
        files = f"{files}/file/bot" if not files.endswith("/file") else f"{files}/bot"
    return base, files


def _retry_after(error: RetryAfter) -> float:
    # PTB 22 warns on reading ``retry_after`` until its type becomes timedelta; either type is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def _is(error: TelegramError, phrase: str) -> bool:
    return phrase in str(error).lower()


class TelegramConnector(Connector):
    """Answers Telegram private chats, mentions and replies in groups, and forum topics."""

    name = "telegram"

    def __init__(
        self, settings: TelegramSettings, admins: Sequence[str] = (), *, max_file_bytes: int = 10_000_000
    ) -> None:
        """``admins`` are ``PARLEY_ADMINS`` entries; the ``telegram:<id>`` ones see admin commands in their menu.
        ``max_file_bytes`` picks the photo size to download (``PARLEY_ATTACHMENTS__MAX_BYTES``)."""
        super().__init__()
        self.max_file_bytes = max_file_bytes
        if settings.token is None:
            raise ConfigError("PARLEY_TELEGRAM__TOKEN is not set")
        self.settings = settings
        self.admin_ids = telegram_admins(admins)
        self.limits = ConnectorLimits(
            max_message_length=min(settings.max_message_length, MessageLimit.MAX_TEXT_LENGTH),
            pacing=Pacing(min_interval=settings.edit_interval),
            group_pacing=Pacing(
                min_interval=settings.group_edit_interval,
                window_calls=settings.group_edits_per_minute,
                window_seconds=60.0,
            ),
            total_pacing=BOT_WIDE,
        )
        self._app: TelegramApp | None = None
        self._sink: InboundSink | None = None
        self._state = "stopped"
        self.bot_id = 0
        self.bot_username = ""
        self.commands = CommandNames({})
        self._chat_admins = ChatAdmins(settings.admin_cache_seconds)
        self.refusals = Refusals(settings.native_refusal_seconds)
        # Random start: a restarted bot must not reuse the id of a draft still shown from before.
        self._draft_id = random.randint(1, MAX_DRAFT_ID)

    def _build(self) -> TelegramApp:
        assert self.settings.token is not None
        base, files = api_urls(self.settings)
        app: TelegramApp = (
            ApplicationBuilder()
            .token(self.settings.token.get_secret_value())
            .base_url(base)
            .base_file_url(files)
            .concurrent_updates(False)
            .update_queue(StoredBeforeConfirmed())
            .build()
        )
        media = filters.Document.ALL | filters.PHOTO | filters.VIDEO | filters.ANIMATION | filters.AUDIO
        readable = filters.TEXT | filters.CAPTION | media | filters.VOICE | filters.VIDEO_NOTE
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & readable, self._on_message))
        return app

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        self._state = "starting"
        async with stop_on_failure(self):
            try:
                await self._start(sink)
            except BaseException:
                self._state = "failed"
                raise
        self._state = "running"
        log.info("telegram: polling as @%s", self.bot_username)

    async def _start(self, sink: InboundSink) -> None:
        self._app = app = self._build()
        try:
            await app.initialize()
        except InvalidToken as exc:
            raise ConfigError(f"telegram: the Bot API refused PARLEY_TELEGRAM__TOKEN: {exc}") from exc
        except TelegramError as exc:
            raise ConnectorError(f"telegram: cannot reach the Bot API: {exc}") from exc
        self.bot_id = app.bot.id
        self.bot_username = app.bot.username
        self.commands = CommandNames.of(sink.command_list)
        if self.settings.register_commands:
            await self._register_commands(app.bot)
        assert app.updater is not None
        try:
            await app.updater.start_polling(
                timeout=dtm.timedelta(seconds=self.settings.poll_timeout),
                allowed_updates=[Update.MESSAGE],
                error_callback=self._on_poll_error,
            )
            await app.start()
        except TelegramError as exc:
            raise ConnectorError(f"telegram: polling did not start: {exc}") from exc

    async def _register_commands(self, bot: Bot) -> None:
        """Fill the command menu; a refusal is logged (typed commands work without a menu)."""
        everyone = self.commands.menu(admin=False)
        every = self.commands.menu(admin=True)
        scopes: list[tuple[BotCommandScope, str]] = [
            (BotCommandScopeDefault(), "everyone"),
            (BotCommandScopeAllChatAdministrators(), "chat administrators"),
            *((BotCommandScopeChat(user), f"admin {user}") for user in self.admin_ids),
        ]
        for scope, label in scopes:
            shown = everyone if isinstance(scope, BotCommandScopeDefault) else every
            try:
                await bot.set_my_commands(shown, scope=scope)
            except TelegramError as exc:
                log.warning("telegram: setMyCommands for %s failed: %s", label, exc)

    def _on_poll_error(self, error: TelegramError) -> None:
        # PTB keeps retrying; the log says why messages are not arriving.
        log.warning("telegram: getUpdates failed, retrying: %s", error)

    async def pause_intake(self) -> None:
        """Stop polling; queued updates go to the sink, unfetched ones stay with Telegram."""
        if self._app is None:
            return
        await self._run_steps(self._intake_steps(self._app))
        self._state = "paused"

    async def stop(self) -> None:
        app, self._app = self._app, None
        if app is None:
            return
        failed = self._state == "failed"
        self._state = "stopping"
        await self._run_steps([*self._intake_steps(app), ("shutdown", lambda: True, app.shutdown)])
        self._state = "failed" if failed else "stopped"

    @staticmethod
    def _intake_steps(app: TelegramApp) -> list[tuple[str, Callable[[], bool], Callable[[], Awaitable[None]]]]:
        steps: list[tuple[str, Callable[[], bool], Callable[[], Awaitable[None]]]] = []
        if app.updater is not None:
            updater = app.updater
            steps.append(("updater.stop", lambda: updater.running, updater.stop))
        steps.append(("stop", lambda: app.running, app.stop))
        return steps

    @staticmethod
    async def _run_steps(steps: list[tuple[str, Callable[[], bool], Callable[[], Awaitable[None]]]]) -> None:
        for label, needed, step in steps:
            if not needed():
                continue
            try:
                await step()
            except (TelegramError, RuntimeError) as exc:
                log.warning("telegram: %s failed during shutdown: %s", label, exc)

    def status(self) -> str:
        return self._state

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or self._sink is None:
            return
        typed = parse_command(message)
        if typed is not None:
            await self._on_command(message, typed)
            return
        files = [self._attachment(file) for file in files_of(message, self.max_file_bytes)]
        incoming = to_incoming(message, self.bot_id, self.bot_username, files)
        if incoming is not None:
            # Stored before this returns, and so before the update is confirmed to Telegram.
            await self._sink.receive(incoming, self)

    def _attachment(self, file: TelegramFile) -> Attachment:
        """``file`` with its download: ``getFile``, then the file URL (which holds the token, so no
        error that names it is logged)."""

        async def fetch(limit: int) -> bytes:
            try:
                found = await self._bot_app().bot.get_file(file.file_id)
                if found.file_size is not None and found.file_size > limit:
                    raise FileTooLarge(f"telegram: {found.file_size} bytes")
                # Telegram serves bots at most 20 MB; getFile refuses larger files itself.
                data = bytes(await found.download_as_bytearray())
            except (TelegramError, OSError) as exc:
                if isinstance(exc, TelegramError) and _is(exc, "file is too big"):
                    raise FileTooLarge("telegram: getFile says the file is too big") from None
                # The class only: a network error's text may hold the file URL, and so the token.
                raise ConnectorError(f"telegram: downloading a file failed ({type(exc).__name__})") from None
            if len(data) > limit:
                raise FileTooLarge(f"telegram: {len(data)} bytes")
            return data

        return Attachment(file.name, file.mime, file.size, fetch)

    async def _on_command(self, message: Message, typed: TypedCommand) -> None:
        """Hand a command for this bot to the sink; commands for other bots are ignored."""
        sender = message.from_user
        if self._sink is None or sender is None or sender.id == self.bot_id:
            return
        is_direct = is_private(message.chat)
        core_name = self.commands.resolve(typed, bot_username=self.bot_username, is_direct=is_direct)
        if core_name is None:
            return
        is_admin = False
        if not is_direct and core_name in self.commands.core_names:
            is_admin = sent_by_chat_admin(message) or await self._chat_admins.is_admin(
                self._bot_app().bot, message.chat.id, sender.id
            )
        request = to_command_request(message, core_name, typed.args, is_admin=is_admin)
        if request is not None:
            self._sink.submit_command(request, self)

    # outgoing

    def native_stream(self, destination: Destination) -> NativeStream | None:
        """A draft stream in a private chat, unless turned off or recently refused."""
        if not self.settings.native_streaming or destination.is_group or self.refusals.active():
            return None
        return DraftStream(self, destination, self._next_draft_id())

    def _next_draft_id(self) -> int:
        """Non-zero and new for each streamed message, so drafts of two replies never merge."""
        self._draft_id = self._draft_id % MAX_DRAFT_ID + 1
        return self._draft_id

    def _bot_app(self) -> TelegramApp:
        if self._app is None:
            raise ConnectorError("telegram: the connector is not running")
        return self._app

    async def send(self, destination: Destination, text: str) -> SentMessage:
        bot = self._bot_app().bot
        reply = (
            ReplyParameters(message_id=int(destination.reply_to), allow_sending_without_reply=True)
            if destination.reply_to
            else None
        )
        thread = int(destination.thread) if destination.thread else None

        async def post(body: str, parse_mode: str | None) -> Message:
            sent: Message = await bot.send_message(
                chat_id=int(destination.channel),
                text=body,
                parse_mode=parse_mode,
                message_thread_id=thread,
                reply_parameters=reply,
            )
            return sent

        message = await self._with_fallback(post, text)
        if message is None:
            raise ConnectorError("telegram: sendMessage returned no message")
        return SentMessage(id=str(message.message_id), destination=destination)

    async def edit(self, message: SentMessage, text: str) -> None:
        bot = self._bot_app().bot

        async def change(body: str, parse_mode: str | None) -> None:
            await bot.edit_message_text(
                chat_id=int(message.destination.channel),
                message_id=int(message.id),
                text=body,
                parse_mode=parse_mode,
            )

        await self._with_fallback(change, text)

    async def typing(self, destination: Destination) -> None:
        bot = self._bot_app().bot
        thread = int(destination.thread) if destination.thread else None
        try:
            await bot.send_chat_action(int(destination.channel), ChatAction.TYPING, message_thread_id=thread)
        except TelegramError as exc:
            raise _map_error(exc) from exc

    async def _with_fallback(
        self,
        call: Callable[[str, str | None], Awaitable[T]],
        markdown: str,
        map_error: Callable[[TelegramError], ConnectorError] | None = None,
    ) -> T | None:
        """Send as HTML; on an entity error (or a rendering too long) send the Markdown as plain text."""
        map_error = map_error or _map_error
        rendered = to_html(markdown)
        if rendered.strip() and visible_length(rendered) <= MessageLimit.MAX_TEXT_LENGTH:
            try:
                return await _unless_unchanged(call(rendered, ParseMode.HTML))
            except BadRequest as exc:
                if not _is(exc, "can't parse entities"):
                    raise map_error(exc) from exc
                log.warning("telegram: entities refused, sending plain text: %s", exc)
            except TelegramError as exc:
                raise map_error(exc) from exc
        try:
            return await _unless_unchanged(call(markdown, None))
        except TelegramError as exc:
            raise map_error(exc) from exc

    def _map_draft_error(self, exc: TelegramError) -> ConnectorError:
        """A draft's error: waits and network trouble as for messages; anything else is a refusal,
        remembered (a Bot API server without the method answers 404, which PTB calls InvalidToken)."""
        if isinstance(exc, RetryAfter) or (isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)):
            return _map_error(exc)  # PTB's BadRequest is a NetworkError, but Telegram refused the call
        self.refusals.note()
        return NativeRefused(f"telegram: sendMessageDraft refused: {exc}")


class DraftStream(NativeStream):
    """One message of a reply to a private chat, streamed as Telegram drafts of one ``draft_id``."""

    refresh = DRAFT_REFRESH
    shows_status = True

    def __init__(self, connector: TelegramConnector, destination: Destination, draft_id: int) -> None:
        self._connector = connector
        self._destination = destination
        self.draft_id = draft_id
        self.pacing = Pacing(min_interval=connector.settings.draft_interval)

    async def _draft(self, markdown: str) -> None:
        bot = self._connector._bot_app().bot
        thread = int(self._destination.thread) if self._destination.thread else None
        chat = int(self._destination.channel)

        async def draft(body: str, parse_mode: str | None) -> None:
            await bot.send_message_draft(
                chat_id=chat, draft_id=self.draft_id, text=body, message_thread_id=thread, parse_mode=parse_mode
            )

        if not markdown.strip():
            try:
                await draft("", None)  # Telegram shows "Thinking..."
            except TelegramError as exc:
                raise self._connector._map_draft_error(exc) from exc
            return
        await self._connector._with_fallback(draft, markdown, self._connector._map_draft_error)

    async def start(self) -> None:
        await self._draft("")

    async def update(self, text: str) -> None:
        await self._draft(text)

    async def finish(self, text: str) -> SentMessage:
        # The draft is only a preview: the message itself is sent, rendered like any other.
        return await self._connector.send(self._destination, text)

    async def abandon(self, shown: str) -> SentMessage | None:
        return None  # a draft is no message to edit: the core posts one and edits it


async def _unless_unchanged(call: Awaitable[T]) -> T | None:
    """Await a Bot API call; an edit that changes nothing is no error (Telegram answers 400)."""
    try:
        return await call
    except BadRequest as exc:
        if _is(exc, "message is not modified"):
            return None
        raise


def _map_error(exc: TelegramError) -> ConnectorError:
    """The core's error for a failed Bot API call."""
    if isinstance(exc, RetryAfter):
        return RateLimited(_retry_after(exc), f"telegram: {exc}")
    if isinstance(exc, BadRequest) and _is(exc, "too long"):
        return MessageTooLong(f"telegram: {exc}")
    return ConnectorError(f"telegram: {exc}")
