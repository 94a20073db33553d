"""The Discord connector, on discord.py.

Lifecycle: :meth:`DiscordConnector.start` logs in over REST (a rejected token raises
``ConnectorError("discord: the token was rejected")``), runs ``client.connect()`` as a background
task (never ``client.run``, which owns the loop and installs signal handlers) and returns once the
gateway is READY and the guilds are in; a start that fails half-way closes the client again.
discord.py itself reconnects and RESUMEs; Discord replays the events missed meanwhile, so no
message is lost, and replies in flight keep using REST. Each message is stored (the sink's
``receive``) by its ``on_message`` before anything else happens; a replayed one is answered once.
If the gateway task ends anyway (an error discord.py does not reconnect from, such as a revoked
token), that is logged with its traceback and :meth:`DiscordConnector.status` reports ``failed``.

Sending: replies go to the thread when there is one, else the channel, as replies to the user's
message, with mentions limited to that reply (the model cannot ping @everyone, roles or users).

Rate limits: the core paces every call (about 5 per 5 s per channel). discord.py still tracks
Discord's ``X-RateLimit-*`` buckets and would sleep on them and on a 429 up to its
``max_ratelimit_timeout`` (at least 30 s through its constructor). We lower that to
``PARLEY_DISCORD__RATE_LIMIT_WAIT`` so a long wait is raised as ``RateLimited`` and the core blocks
the whole channel (coalescing edits meanwhile) instead of one call silently hanging; only short
bucket waits (a Discord edit bucket resets within ~5 s) stay inside discord.py.

Slash commands: once READY, every command of the core is registered (bulk overwrite, globally or
in each guild of ``PARLEY_DISCORD__GUILD_IDS``; see :mod:`connectors.discord.commands`). An
invocation is deferred at once, then handed to the core, whose answers come back through
:meth:`DiscordConnector.send`/``edit`` with the interaction in ``Destination.handle``; see
:mod:`connectors.discord.interactions` for how those become the original response and followups.
The deferral is ephemeral for an admin command called without Manage Server (most likely refused,
and a refusal is shown to the caller only); otherwise it is public.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

import aiohttp
import discord

from bot.connector import Connector, ConnectorLimits, InboundSink, SentMessage, stop_on_failure
from bot.conversation import Attachment, Destination
from bot.errors import ConnectorError, FileTooLarge, MessageTooLong, RateLimited
from bot.pacing import Pacing
from bot.settings import DiscordSettings
from connectors.discord import endpoints
from connectors.discord.commands import application_commands
from connectors.discord.inbound import Participation, find_command, to_command_request, to_incoming
from connectors.discord.interactions import InteractionHandle, InteractionReplies

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MESSAGE_LENGTH = 2000
EDIT_PACING = Pacing(min_interval=1.0, window_calls=5, window_seconds=5.0)
"""Discord allows about 5 message edits per 5 s in a channel."""

# The model's text must not ping anyone; replying to the user may notify them.
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)


def intents() -> discord.Intents:
    """Only what answering needs: guild and thread metadata, messages in guilds and DMs, their text.

    ``message_content`` is privileged (enable it in the developer portal): without it Discord blanks
    the text of thread messages and replies that do not mention the bot.
    """
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


class DiscordConnector(Connector):
    """Talks to Discord through one discord.py client (sharded when ``shards`` is set)."""

    name: ClassVar[str] = "discord"

    def __init__(self, settings: DiscordSettings, *, max_file_bytes: int = 10_000_000) -> None:
        super().__init__()
        self.settings = settings
        self.max_file_bytes = max_file_bytes
        self.limits = ConnectorLimits(max_message_length=MAX_MESSAGE_LENGTH, pacing=EDIT_PACING)
        self._guild_ids = tuple(int(guild) for guild in settings.guild_ids)
        self._seen = Participation()
        self._client: discord.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        """Why the last start failed, or why the gateway task ended on its own since."""
        self._ready = asyncio.Event()
        self._sink: InboundSink | None = None
        self._previous_endpoints: endpoints.Endpoints | None = None

    # lifecycle

    def _make_client(self) -> discord.Client:
        client: discord.Client
        if self.settings.shards is not None:
            # Large servers: discord.py runs the shards in one client (it asks /gateway/bot where to go).
            client = discord.AutoShardedClient(
                shard_count=self.settings.shards,
                intents=intents(),
                allowed_mentions=ALLOWED_MENTIONS,
                guild_ready_timeout=self.settings.guild_ready_timeout,
                max_messages=None,
            )
        else:
            client = discord.Client(
                intents=intents(),
                allowed_mentions=ALLOWED_MENTIONS,
                guild_ready_timeout=self.settings.guild_ready_timeout,
                max_messages=None,  # no message cache: a reply carries the message it references
            )
        # Below discord.py's 30 s floor on purpose: see the module docstring. Buckets are created
        # lazily with this value, so setting it before the first request covers them all.
        client.http.max_ratelimit_timeout = self.settings.rate_limit_wait

        async def on_ready() -> None:
            log.info("discord: ready as %s in %d guild(s)", client.user, len(client.guilds))
            self._ready.set()

        async def on_message(message: discord.Message) -> None:
            await self._deliver(client, message)

        async def on_interaction(interaction: discord.Interaction[discord.Client]) -> None:
            await self._on_interaction(client, interaction)

        client.event(on_ready)
        client.event(on_message)
        client.event(on_interaction)
        return client

    async def start(self, sink: InboundSink) -> None:
        if self._client is not None:
            raise ConnectorError("discord: already started")
        if self.settings.token is None:
            raise ConnectorError("discord: PARLEY_DISCORD__TOKEN is not set")
        self._sink = sink
        self._ready.clear()
        self._failure = None
        async with stop_on_failure(self):
            try:
                self._previous_endpoints = endpoints.point_at(self.settings)
                await self._connect(self.settings.token.get_secret_value())
            except BaseException as exc:
                self._failure = exc
                raise

    async def _connect(self, token: str) -> None:
        client = self._client = self._make_client()
        try:
            await client.login(token)
        except discord.LoginFailure as exc:
            raise ConnectorError("discord: the token was rejected") from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            raise ConnectorError(f"discord: cannot log in at {endpoints.current().api_base}: {exc}") from exc
        task = self._task = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
        task.add_done_callback(self._gateway_ended)
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({task, ready}, timeout=self.settings.connect_timeout, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
        if self._ready.is_set():
            await self._sync_commands(client)
            return
        if task.done():
            error = task.exception()
            if isinstance(error, discord.PrivilegedIntentsRequired):
                raise ConnectorError(
                    "discord: the message content intent is not enabled for this bot (developer portal → Bot)"
                ) from error
            raise ConnectorError(f"discord: the gateway connection failed: {error!r}") from error
        raise ConnectorError(f"discord: not ready after {self.settings.connect_timeout:.0f}s")

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        """Note why the gateway stopped when it was not ``stop()`` that stopped it."""
        if task is not self._task or task.cancelled():
            return  # stop() took the task first: an ordinary shutdown
        error = task.exception()
        self._failure = error if error is not None else ConnectorError("discord: the gateway closed")
        if self._ready.is_set():  # during start-up, start() raises the error itself
            log.error("discord: the gateway connection ended; no more messages arrive", exc_info=error)

    async def stop(self) -> None:
        client, self._client = self._client, None
        task, self._task = self._task, None
        self._ready.clear()
        if client is not None:
            await client.close()
        if task is not None:
            if not task.done():
                # close() makes connect() return; cancel only if it does not within a moment.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait({task}, timeout=5)
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                # If it ended on its own, _gateway_ended logged it already; this is the closing itself.
                log.debug("discord: the gateway task failed while stopping", exc_info=True)
        if self._previous_endpoints is not None:
            endpoints.restore(self._previous_endpoints)
            self._previous_endpoints = None

    def status(self) -> str:
        """``running`` once READY, ``connecting`` while (re)connecting, ``failed`` after a failed start
        or once the gateway ended on its own (until the next start), else ``stopped``."""
        if self._failure is not None or (self._task is not None and self._task.done()):
            return "failed"
        if self._task is None:
            return "stopped"
        if self._client is not None and self._client.is_ready() and self._ready.is_set():
            return "running"
        return "connecting"

    # inbound

    async def _deliver(self, client: discord.Client, message: discord.Message) -> None:
        me = client.user
        if me is None or self._sink is None:
            return
        files = [_attachment(file) for file in message.attachments]
        incoming = to_incoming(message, me, self._seen, files)
        if incoming is not None:
            # Discord has no acknowledgement of events (a RESUME replays from the last sequence
            # number received, not handled): storing at once keeps the window to a crash small.
            await self._sink.receive(incoming, self)

    async def _sync_commands(self, client: discord.Client) -> None:
        """Register the core's commands; a failure is logged (mentions and DMs still work)."""
        if self._sink is None or client.application_id is None:
            return
        payload = application_commands(self._sink.command_list)
        targets: tuple[int | None, ...] = self._guild_ids or (None,)
        for guild in targets:
            where = "globally" if guild is None else f"in guild {guild}"
            try:
                if guild is None:
                    await client.http.bulk_upsert_global_commands(client.application_id, payload)
                else:
                    await client.http.bulk_upsert_guild_commands(client.application_id, guild, payload)
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                hint = " (is the bot in it, invited with the applications.commands scope?)" if guild else ""
                log.error("discord: could not register the slash commands %s%s: %s", where, hint, exc)
            else:
                log.info("discord: %d slash commands registered %s", len(payload), where)

    async def _on_interaction(self, client: discord.Client, interaction: discord.Interaction[discord.Client]) -> None:
        sink = self._sink
        if sink is None or interaction.type is not discord.InteractionType.application_command:
            return
        commands = sink.command_list
        command = find_command(commands, interaction.data or {})
        manages = interaction.guild_id is not None and interaction.permissions.manage_guild
        try:
            handle = await InteractionReplies(client.http).defer(
                interaction.id,
                interaction.token,
                interaction.application_id,
                ephemeral=command is not None and command.admin and not manages,
            )
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            # Nothing can answer it any more: Discord shows "The application did not respond".
            log.warning("discord: could not acknowledge /%s: %s", command.name if command else "?", exc)
            return
        sink.submit_command(to_command_request(interaction, commands, handle), self)

    # outbound

    def _messageable(self, destination: Destination) -> discord.PartialMessageable:
        if self._client is None:
            raise ConnectorError("discord: not connected")
        return self._client.get_partial_messageable(int(destination.thread or destination.channel))

    def _replies(self) -> InteractionReplies:
        if self._client is None:
            raise ConnectorError("discord: not connected")
        return InteractionReplies(self._client.http)

    async def send(self, destination: Destination, text: str) -> SentMessage:
        handle = destination.handle
        if isinstance(handle, InteractionHandle):
            if not handle.expired:
                message_id = await _call(self._replies().send(handle, text, ephemeral=destination.ephemeral))
                self._seen.sent(int(message_id))
                return SentMessage(id=message_id, destination=destination)
            if destination.ephemeral:
                raise ConnectorError("discord: the command's interaction expired; an ephemeral answer is impossible")
            # Past the token's 15 minutes, a long answer goes on as ordinary channel messages.
            destination = Destination(destination.channel, destination.thread, is_group=destination.is_group)
        channel = self._messageable(destination)
        if destination.reply_to is None:
            posting = channel.send(text, allowed_mentions=ALLOWED_MENTIONS)
        else:
            # fail_if_not_exists=False: if the user deleted their message, the answer still goes out.
            reference = discord.MessageReference(
                message_id=int(destination.reply_to), channel_id=channel.id, fail_if_not_exists=False
            )
            posting = channel.send(text, reference=reference, allowed_mentions=ALLOWED_MENTIONS)
        message = await _call(posting)
        self._seen.sent(message.id)
        if destination.thread is not None:
            self._seen.joined(int(destination.thread))
        return SentMessage(id=str(message.id), destination=destination)

    async def edit(self, message: SentMessage, text: str) -> None:
        handle = message.destination.handle
        if isinstance(handle, InteractionHandle):
            if handle.expired:
                raise ConnectorError("discord: the command's interaction expired (15 minutes)")
            await _call(self._replies().edit(handle, message.id, text))
            return
        partial = self._messageable(message.destination).get_partial_message(int(message.id))
        # Discord accepts an edit that changes nothing, so no special case is needed.
        await _call(partial.edit(content=text, allowed_mentions=ALLOWED_MENTIONS))

    async def typing(self, destination: Destination) -> None:
        if isinstance(destination.handle, InteractionHandle):
            return  # the deferred response already shows "thinking"
        await _call(self._messageable(destination).typing())


async def _call(call: Awaitable[T]) -> T:
    """Await a discord.py call; its failures become the core's connector errors."""
    try:
        return await call
    except (discord.RateLimited, discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise _map_error(exc) from exc


def _map_error(exc: discord.RateLimited | discord.HTTPException | aiohttp.ClientError | OSError) -> ConnectorError:
    """The core's error for a failed discord.py call."""
    if isinstance(exc, discord.RateLimited):
        return RateLimited(exc.retry_after, f"discord: {exc}")
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            # A 429 without Discord's Via header (a Cloudflare block) surfaces here unretried.
            retry_after = exc.response.headers.get("Retry-After")
            return RateLimited(float(retry_after) if retry_after else 60.0, f"discord: {exc}")
        if exc.status == 400 and "length" in exc.text.lower():
            return MessageTooLong(f"discord: {exc}")
        return ConnectorError(f"discord: {exc}")
    return ConnectorError(f"discord: request failed: {exc!r}")


def _attachment(file: discord.Attachment) -> Attachment:
    """``file`` with its download from Discord's CDN (``Attachment.read``, into memory).

    Discord declares the exact size, so a file over the limit is refused before this runs."""

    async def fetch(limit: int) -> bytes:
        if file.size > limit:
            raise FileTooLarge(f"discord: {file.size} bytes")
        try:
            data = await file.read()
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectorError(f"discord: downloading attachment {file.id} failed: {exc}") from None
        if len(data) > limit:
            raise FileTooLarge(f"discord: {len(data)} bytes")
        return data

    return Attachment(file.filename, file.content_type or "", file.size, fetch)
