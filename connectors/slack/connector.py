"""The Slack connector: slack-bolt's ``AsyncApp`` over Socket Mode or the Events API.

Transport: Socket Mode when ``PARLEY_SLACK__APP_TOKEN`` is set (no public URL needed), otherwise
``POST /slack/events`` on Parley's web server, verified with ``PARLEY_SLACK__SIGNING_SECRET``.
``PARLEY_SLACK__API_URL`` moves the Web API (and so ``apps.connections.open``) elsewhere.

Bolt acknowledges an event once our listener returned (``process_before_response`` is on), and
the listener returns once the sink has stored the message (its ``receive``): what Slack was told
it delivered is in SQLite, and a listener that fails is answered 500, so Slack retries. The
listener only decides and stores (a ``users.info`` lookup at most, bounded well inside Slack's 3 s);
the answer is generated afterwards. A retried delivery carries the same ``event_id`` and is dropped
(the inbox also knows the message's ``ts``, across restarts); the two copies of a channel mention
(``app_mention`` and ``message``) share ``(channel, ts)`` and only the first is delivered. Which
messages are answered, and in which thread, is decided in :mod:`connectors.slack.inbound`.

A message to answer inside a thread someone else started carries the thread's root as its quote:
the event names only ``thread_ts``, so the root is read with ``conversations.replies``
(``limit=1``), cached per thread, alongside the sender's ``users.info``; if the read fails the
message is answered without it. Authors are looked up only for messages to answer, and for the
chatter a listening channel keeps (:meth:`~bot.connector.InboundSink.listening`).

Slash commands (every command of the loaded plugins, named ``/<PARLEY_SLACK__COMMAND_PREFIX><name>``)
arrive as Socket Mode ``slash_commands`` envelopes or, over HTTP, form-encoded at the same
``POST /slack/events``. They are acknowledged empty at once (Bolt's ``ack`` function; the rest
runs as a lazy listener) and handed to the core as a
:class:`~bot.conversation.CommandRequest` (see :mod:`connectors.slack.inbound`). Answers go into the
channel; ephemeral ones (refusals, usage) are ``chat.postEphemeral`` to the caller, or the
command's ``response_url`` where the bot is not in the channel. The core never edits an
ephemeral message (it sends those once), which Slack could not do anyway.

Native streaming (:class:`ChatStream`): a reply in a thread streams with ``chat.startStream``,
``chat.appendStream`` (Markdown, at most 12,000 characters a call) and ``chat.stopStream``; in a
channel the stream names its recipient (the user who asked, and the workspace from
``auth.test``). Slack's streams need a ``thread_ts``, so a top-level DM, answered at top level as
before, keeps ``chat.update`` edits; a DM thread streams. ``appendStream`` is a Tier 4 method
(100+ calls a minute per workspace), so appends are paced at :data:`STREAM_PACING`; start and stop
post and finish a message and are paced like ``chat.postMessage``, about one a second per
channel. A refusal is remembered for ``native_refusal_seconds``, for the workspace (the method or
scope is missing) or for the channel, and the reply goes on with ``chat.update``.

``send``/``edit`` are single ``chat.postMessage``/``chat.update`` calls: no sleeping, no retries.
``ratelimited`` (HTTP 429) becomes ``RateLimited(Retry-After)``, ``msg_too_long`` becomes
``MessageTooLong``, anything else ``ConnectorError``. A start that fails half-way (a bad app token)
closes the Socket Mode client it opened.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import aiohttp
import yarl
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.bounded import BoundedDict, BoundedSet
from bot.connector import (
    Connector,
    ConnectorLimits,
    HttpRoutes,
    InboundSink,
    NativeStream,
    Refusals,
    SentMessage,
    stop_on_failure,
)
from bot.conversation import Attachment, ConversationKey, Destination, IncomingMessage, Quote
from bot.errors import ConfigError, ConnectorError, FileTooLarge, MessageTooLong, NativeRefused, RateLimited
from bot.pacing import Pacing
from bot.settings import SlackSettings
from connectors.slack.inbound import (
    PLATFORM,
    BotIdentity,
    CommandHandle,
    SlackFile,
    ThreadKeys,
    clean_text,
    files_of,
    is_direct_channel,
    is_from_a_person,
    is_slack_id,
    to_command_request,
    to_incoming,
    user_name_of,
)
from connectors.slack.manifest import EVENTS_PATH
from connectors.slack.render import to_mrkdwn

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
FILE_HOST = "files.slack.com"
"""Where Slack serves ``url_private_download``: the only host the bot token is sent to for files."""
FILE_TIMEOUT = 60.0
"""Seconds one file download may take."""
MAX_MESSAGE_CHARS = 3000
"""Markdown per message. Rendering as mrkdwn adds a little (escapes, link brackets), and
``chat.update`` refuses text near 4,000 characters, so this keeps each message under ~3,500."""
CONNECT_TIMEOUT = 30.0
LOOKUP_TIMEOUT = 3.0
RESPOND_TIMEOUT = 5
EVENT_LOOKUP_TIMEOUT = 1.5
"""``users.info`` before an event is acknowledged: well inside Slack's 3 s with the store after it."""
ROOT_LOOKUP_TIMEOUT = 1.5
"""Fetching a thread's root (and its author's name), alongside the ``users.info`` above."""
MAX_TIMESTAMP_DIGITS = 12
NOT_A_MEMBER = frozenset({"not_in_channel", "channel_not_found"})
"""What Slack answers a post to a channel the bot cannot see; a command there is answered via its response_url."""
STREAM_PACING = Pacing(min_interval=0.6)
"""Appends to one stream: ``chat.appendStream`` is Tier 4, "100+ per minute" per workspace
(docs.slack.dev/reference/methods/chat.appendStream, docs.slack.dev/apis/web-api/rate-limits)."""
STREAM_CHUNK = 12_000
"""``markdown_text`` per stream call: "Limit this field to 12,000 characters" (chat.*Stream)."""
WORKSPACE_REFUSALS = frozenset(
    {
        "unknown_method",
        "method_deprecated",
        "deprecated_endpoint",
        "not_allowed_token_type",
        "missing_scope",
        "access_denied",
        "accesslimited",
        "enterprise_is_restricted",
        "team_access_not_granted",
    }
)
"""Stream errors that mean the workspace (or token) has no chat streams at all; others are
remembered for the channel only."""
NOT_STREAMING = "message_not_in_streaming_state"
STREAMING_CONFLICT = "streaming_state_conflict"
"""``chat.update`` on a message that is still streaming (e.g. one a crash left open)."""


async def _nothing() -> None:
    return None


class NotStored(ConnectorError):
    """A Slack message the sink could not store; Slack is answered 500 and delivers it again."""


def api_base(url: str | None) -> str:
    """The Web API base URL as slack_sdk wants it (ending in ``/api/``)."""
    if not url:
        return DEFAULT_API_URL
    base = url.rstrip("/")
    if not base.endswith("/api"):
        base += "/api"
    return base + "/"


def _map_error(exc: SlackApiError | aiohttp.ClientError | TimeoutError, method: str) -> ConnectorError:
    """The core's error for a failed Web API call."""
    if not isinstance(exc, SlackApiError):
        return ConnectorError(f"Slack {method} failed: {exc!r}")
    response = exc.response
    error = str(response.get("error", "")) if isinstance(response.data, dict) else ""
    if response.status_code == 429 or error == "ratelimited":
        headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
        try:
            retry_after = float(headers.get("retry-after", "1"))
        except ValueError:
            retry_after = 1.0
        return RateLimited(retry_after, f"Slack {method} rate-limited for {retry_after:.0f}s")
    if error == "msg_too_long":
        return MessageTooLong(f"Slack {method}: msg_too_long")
    return ConnectorError(f"Slack {method} failed: {error or f'HTTP {response.status_code}'}")


class SlackConnector(Connector):
    """Slack through slack-bolt; see the module docstring for the transport and the rules."""

    name = "slack"

    def __init__(self, settings: SlackSettings, routes: HttpRoutes | None, *, max_file_bytes: int = 10_000_000) -> None:
        super().__init__()
        if settings.bot_token is None:
            raise ConfigError("PARLEY_SLACK__BOT_TOKEN is not set")
        self.max_file_bytes = max_file_bytes
        self._bot_token = settings.bot_token
        # The bot token goes only to Slack's file host (or the host of a configured API URL, such
        # as a test's fake), never to a URL an event names elsewhere.
        self._file_hosts = {FILE_HOST, yarl.URL(api_base(settings.api_url)).host}
        # Slack allows about one message per second per channel; chat.update is tier-limited on top,
        # which we learn from its 429s rather than guess.
        self.limits = ConnectorLimits(max_message_length=MAX_MESSAGE_CHARS, pacing=Pacing(min_interval=1.0))
        self._app_token = settings.app_token.get_secret_value() if settings.app_token is not None else None
        if self._app_token is None:
            if routes is None:
                raise ConfigError(
                    "Slack without PARLEY_SLACK__APP_TOKEN (Socket Mode) receives events over HTTP and needs "
                    "the web server: set PARLEY_WEB__ENABLED=true, or set PARLEY_SLACK__APP_TOKEN"
                )
            if settings.signing_secret is None:
                raise ConfigError(
                    "Slack over HTTP (no PARLEY_SLACK__APP_TOKEN) needs PARLEY_SLACK__SIGNING_SECRET to verify requests"
                )
            # The web server starts before connectors and aiohttp freezes its router then.
            routes.add_route("POST", EVENTS_PATH, self._http_events)
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret is not None else ""
        self._verifier = SignatureVerifier(secret) if secret else None
        self.client = AsyncWebClient(token=settings.bot_token.get_secret_value(), base_url=api_base(settings.api_url))
        self._app = AsyncApp(
            client=self.client,
            signing_secret=secret,
            # Socket Mode requests are not signed; Bolt skips the check for them anyway.
            request_verification_enabled=self._app_token is None,
            name="parley",
            logger=logging.getLogger("parley.slack.bolt"),
            # Ack only once the listener has stored the message (see the module docstring).
            process_before_response=True,
        )
        self._app.event("message")(self._on_message)
        self._app.event("app_mention")(self._on_mention)
        self._app.command(re.compile(r"^/"))(ack=self._ack_command, lazy=[self._on_command])
        self._app.error(self._on_bolt_error)
        self._prefix = settings.command_prefix
        self._sink: InboundSink | None = None
        self._handler: AsyncSocketModeHandler | None = None
        self._identity: BotIdentity | None = None
        self._state = "stopped"
        self._events: BoundedSet[str] = BoundedSet(2048)
        """Event ids seen: a redelivery carries the same one."""
        self._messages: BoundedSet[tuple[str, str]] = BoundedSet(2048)
        """``(channel, ts)`` seen: the two copies of a mention share it."""
        self._threads: ThreadKeys = BoundedSet(8192)
        self._people: BoundedDict[str, tuple[str, bool]] = BoundedDict(4096)
        """Display name and admin flag by user id (``users.info``)."""
        self._roots: BoundedDict[tuple[str, str], tuple[str, str, str]] = BoundedDict(1024, ttl=3600)
        """A thread's root by ``(channel, thread_ts)``: its author's id and name and its text (``""``
        for the id when it is not to be quoted: the bot's, or one that mentions it)."""
        self.native_streaming = settings.native_streaming
        self.refusals = Refusals(settings.native_refusal_seconds)
        self.team_id: str | None = None

    # lifecycle

    async def start(self, sink: InboundSink) -> None:
        self._state = "starting"
        async with stop_on_failure(self):
            try:
                await self._start(sink)
            except BaseException:
                self._state = "failed"
                raise
        self._state = "running"

    async def _start(self, sink: InboundSink) -> None:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConnectorError(f"Slack auth.test failed: {exc.response.get('error')}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, "auth.test") from exc
        self._identity = BotIdentity(str(auth["user_id"]), auth.get("bot_id"))
        team = auth.get("team_id")
        self.team_id = str(team) if team else None
        log.info("slack: signed in as %s (%s)", auth.get("user"), self._identity.user_id)
        if self._app_token is not None:
            await self._connect_socket(self._app_token)
        self._sink = sink

    async def _connect_socket(self, app_token: str) -> None:
        handler = self._handler = AsyncSocketModeHandler(self._app, app_token)
        client = handler.client
        try:
            # Ask for the URL ourselves: the client's connect() retries failures forever, and a bad
            # app token should stop start-up with a clear message instead.
            client.wss_uri = await client.issue_new_wss_url()
            await asyncio.wait_for(handler.connect_async(), CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
        except SlackApiError as exc:
            raise ConnectorError(f"Slack apps.connections.open failed: {exc.response.get('error')}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectorError(f"Slack Socket Mode connection failed: {exc!r}") from exc

    async def stop(self) -> None:
        self._sink = None
        if self._state != "failed":
            self._state = "stopped"
        handler, self._handler = self._handler, None
        if handler is not None:
            try:
                await handler.close_async()  # type: ignore[no-untyped-call]
            except Exception:  # shutting down: note it and carry on closing the rest
                log.warning("slack: closing the Socket Mode connection failed", exc_info=True)

    def status(self) -> str:
        if self._state == "running" and self._handler is not None:
            session = self._handler.client.current_session
            if session is None or session.closed:
                return "reconnecting"
        return self._state

    # inbound

    async def _http_events(self, request: web.Request) -> web.StreamResponse:
        if self._sink is None:
            # Not started (or stopping): Slack retries later, and the retry is answered then.
            return web.json_response({"error": "starting"}, status=503)
        bolt_request = await self._verified(request)
        if isinstance(bolt_request, web.Response):
            return bolt_request
        response = await self._app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def _verified(self, request: web.Request) -> AsyncBoltRequest | web.Response:
        """The request for Bolt if it is a genuine one from Slack, else the refusal to answer.

        Bolt checks the signature and the timestamp's age too, but it parses the body first and
        raises on a body that is not what Slack sends (invalid JSON or UTF-8, a JSON array), and
        on a timestamp that is not a number: those become 400/401 here, one log line each.
        """
        raw = await request.read()
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
            return _refuse(401, "invalid_timestamp", "a timestamp that is not a number")
        try:
            body = raw.decode()
        except UnicodeDecodeError:
            return _refuse(400, "invalid_body", "a body that is not UTF-8")
        if self._verifier is None or not self._verifier.is_valid(body, stamp, signature):
            return _refuse(401, "invalid_signature", "a bad signature or a stale timestamp")
        try:
            return AsyncBoltRequest(body=body, query=request.query_string, headers=dict(request.headers.items()))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return _refuse(400, "invalid_body", f"a signed body Slack would not send ({type(exc).__name__})")

    async def _on_message(self, body: dict[str, Any]) -> None:
        await self._on_event(body, mentioned=False)

    async def _on_mention(self, body: dict[str, Any]) -> None:
        await self._on_event(body, mentioned=True)

    async def _on_event(self, body: Mapping[str, Any], *, mentioned: bool) -> None:
        event = body.get("event")
        identity, sink = self._identity, self._sink
        if not isinstance(event, Mapping) or identity is None or sink is None:
            return
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not self._events.add(event_id):
            log.debug("slack: dropping retried event %s", event_id)
            return
        if not is_from_a_person(event, identity):
            return
        seen = (event["channel"], event["ts"])
        if not self._messages.add(seen):
            return  # the other copy of a mention, or a retry under a new event id
        try:
            await self._deliver(event, identity, sink, mentioned=mentioned)
        except BaseException as exc:
            # Not stored: Bolt answers 500 and Slack's retry must be taken then.
            self._messages.discard(seen)
            if isinstance(event_id, str):
                self._events.discard(event_id)
            if isinstance(exc, Exception):
                raise NotStored(f"slack: message {event['ts']} in {event['channel']} was not stored") from exc
            raise

    def _attachment(self, file: SlackFile) -> Attachment:
        """``file`` with its download: ``url_private_download`` with the bot token as Bearer, read in
        chunks into memory and stopped once past the limit."""

        async def fetch(limit: int) -> bytes:
            if not file.url:
                raise ConnectorError("slack: the file cannot be downloaded (deleted, external or hidden)")
            url = yarl.URL(file.url)
            if url.host not in self._file_hosts:
                raise ConnectorError(f"slack: a file URL on {url.host!r} is not Slack's; not downloaded")
            headers = {"Authorization": f"Bearer {self._bot_token.get_secret_value()}"}
            timeout = aiohttp.ClientTimeout(total=FILE_TIMEOUT)
            data = bytearray()
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers=headers) as response,
                ):
                    if response.status >= 400:
                        raise ConnectorError(f"slack: the file download answered HTTP {response.status}")
                    if response.content_length is not None and response.content_length > limit:
                        raise FileTooLarge(f"slack: {response.content_length} bytes")
                    if response.content_type == "text/html" and file.mime != "text/html":
                        # Slack answers a request it did not authorise with its sign-in page.
                        raise ConnectorError("slack: the file download answered a sign-in page")
                    async for chunk in response.content.iter_chunked(65_536):
                        data += chunk
                        if len(data) > limit:
                            raise FileTooLarge(f"slack: more than {limit} bytes")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ConnectorError(f"slack: the file download failed: {exc!r}") from None
            return bytes(data)

        return Attachment(file.name, file.mime, file.size, fetch)

    @staticmethod
    async def _on_bolt_error(error: Exception) -> BoltResponse | None:
        """Bolt's handler of what a listener or middleware raised.

        A message that could not be stored stays a 500 (Slack retries it), logged with its
        traceback. Anything else failed on a request of a shape Slack does not send (Bolt's
        middleware reads its fields without checking them): a 400 and one log line.
        """
        if isinstance(error, NotStored):
            log.error("%s", error, exc_info=error.__cause__)
            return None
        log.warning("slack: refused a request of a shape Slack does not send: %r", error)
        return BoltResponse(status=400, body='{"ok": false, "error": "invalid_body"}')

    async def _deliver(
        self, event: Mapping[str, Any], identity: BotIdentity, sink: InboundSink, *, mentioned: bool
    ) -> None:
        files = [self._attachment(file) for file in files_of(event)]
        message = to_incoming(event, identity, self._threads, mentioned=mentioned, attachments=files)
        if message is None:
            return
        if not message.addressed and message.thread is not None and not message.is_direct:
            # A thread answered before a restart is not in memory any more, but it is in the store.
            thread_key = ConversationKey(PLATFORM, message.channel, message.thread, None)
            message = replace(message, addressed=await sink.has_conversation(thread_key))
        if message.addressed and message.thread is not None and not message.is_direct:
            self._threads.add((message.channel, message.thread))
        if message.addressed or sink.listening(PLATFORM, message.channel):
            # Look people up only when answering them, or when a listening channel keeps what they
            # said: other channel chatter costs no users.info calls.
            user = str(event["user"])
            person = self._person(user, user_name_of(event) or user, EVENT_LOOKUP_TIMEOUT)
            root = self._thread_root(event, message, identity) if message.addressed else _nothing()
            (name, admin), quote = await asyncio.gather(person, root)
            message = replace(message, user_name=name, is_admin=admin, quote=quote)
        # Stored before this returns, and so before Bolt acknowledges the event.
        await sink.receive(message, self)

    @staticmethod
    async def _ack_command(ack: AsyncAck) -> None:
        # Ack at once: Slack shows the caller an error after 3 s; _on_command runs after it.
        await ack()

    async def _on_command(self, body: dict[str, Any]) -> None:
        sink, user = self._sink, body.get("user_id")
        if sink is None or not isinstance(user, str) or not user:
            return
        name, admin = await self._person(user, str(body.get("user_name") or user))
        request = to_command_request(body, prefix=self._prefix, user_name=name, is_admin=admin)
        if request is None:
            log.warning("slack: ignoring a slash command without a channel: %s", body.get("command"))
            return
        sink.submit_command(request, self)

    async def _thread_root(
        self, event: Mapping[str, Any], message: IncomingMessage, identity: BotIdentity
    ) -> Quote | None:
        """The root of the thread ``message`` was written in, as its quote, when someone else wrote
        it: not the bot, not this user, and not a mention of the bot (that one is in the history).

        The event carries only ``thread_ts``: the root comes from ``conversations.replies``
        (``limit=1``), cached per thread. If that fails, the message is answered without it.
        """
        thread_ts = event.get("thread_ts")
        if not isinstance(thread_ts, str) or message.thread != thread_ts or thread_ts == message.message_id:
            return None
        if event.get("parent_user_id") in (identity.user_id, message.user):
            return None
        root = self._roots.get((message.channel, thread_ts))
        if root is None:
            try:
                fetch = self._fetch_root(message.channel, thread_ts, identity)
                root = await asyncio.wait_for(fetch, ROOT_LOOKUP_TIMEOUT)
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                reason = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
                log.warning(
                    "slack: could not read the root of thread %s in %s (%s); answering without it",
                    thread_ts,
                    message.channel,
                    reason,
                )
                return None
            self._roots[(message.channel, thread_ts)] = root
        author, name, text = root
        if not author or author == message.user or not text.strip():
            return None
        return Quote(name, text)

    async def _fetch_root(self, channel: str, thread_ts: str, identity: BotIdentity) -> tuple[str, str, str]:
        answer = await self.client.conversations_replies(channel=channel, ts=thread_ts, limit=1, inclusive=True)
        messages = answer.get("messages")
        root = messages[0] if isinstance(messages, list) and messages else None
        if not isinstance(root, Mapping) or root.get("ts") != thread_ts:
            return "", "", ""
        raw = root.get("text")
        text = raw if isinstance(raw, str) else ""
        bot = root.get("bot_id")
        author = root.get("user") if is_slack_id(root.get("user")) else bot
        if not is_slack_id(author) or author == identity.user_id or (bot and bot == identity.bot_id):
            return "", "", ""
        if identity.mention.search(text):
            return "", "", ""
        profile = root.get("bot_profile")
        if bot and isinstance(profile, Mapping) and isinstance(profile.get("name"), str):
            name = str(profile["name"])
        else:
            name, _ = await self._person(author, user_name_of(root) or author, ROOT_LOOKUP_TIMEOUT)
        return author, name, clean_text(text, identity)

    async def _person(self, user: str, fallback: str, wait: float = LOOKUP_TIMEOUT) -> tuple[str, bool]:
        """Display name and workspace-admin flag (``users.info``, cached; ``fallback`` if unknown)."""
        known = self._people.get(user)
        if known is not None:
            return known
        name, admin = fallback, False
        try:
            info = await asyncio.wait_for(self.client.users_info(user=user), wait)
            person = info.get("user") or {}
            profile = person.get("profile") or {}
            name = profile.get("display_name") or profile.get("real_name") or person.get("name") or name
            admin = bool(person.get("is_admin") or person.get("is_owner"))
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # A missing users:read scope should not stop the bot from answering.
            log.debug("slack: users.info for %s failed: %s", user, exc)
        self._people[user] = (str(name), admin)
        return str(name), admin

    # outbound

    async def send(self, destination: Destination, text: str) -> SentMessage:
        handle = destination.handle if isinstance(destination.handle, CommandHandle) else None
        if handle is not None and destination.ephemeral:
            return await self._send_ephemeral(destination, handle, text)
        try:
            response = await self.client.chat_postMessage(
                channel=destination.channel,
                text=to_mrkdwn(text),
                thread_ts=destination.thread,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            if handle is not None and exc.response.get("error") in NOT_A_MEMBER:
                await self._respond(handle, "I am not in this channel, so I cannot answer here: invite me first.")
            raise _map_error(exc, "chat.postMessage") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, "chat.postMessage") from exc
        if destination.thread is not None and not is_direct_channel(destination.channel):
            self._threads.add((destination.channel, destination.thread))
        return SentMessage(id=str(response["ts"]), destination=destination)

    async def edit(self, message: SentMessage, text: str) -> None:
        channel = message.destination.channel
        try:
            try:
                await self.client.chat_update(channel=channel, ts=message.id, text=to_mrkdwn(text))
            except SlackApiError as exc:
                if exc.response.get("error") != STREAMING_CONFLICT:
                    raise
                # Still streaming (a reply cut off by a crash): end the stream, then edit it.
                await self.client.chat_stopStream(channel=channel, ts=message.id)
                await self.client.chat_update(channel=channel, ts=message.id, text=to_mrkdwn(text))
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, "chat.update") from exc

    def native_stream(self, destination: Destination) -> NativeStream | None:
        """A chat stream where there is a thread (and, in a channel, a known recipient)."""
        channel, thread = destination.channel, destination.thread
        if not self.native_streaming or thread is None or destination.ephemeral:
            return None
        if self.refusals.active() or self.refusals.active(channel):
            return None
        if not is_direct_channel(channel) and (destination.user is None or self.team_id is None):
            return None  # a channel stream must name its recipient
        return ChatStream(self, destination)

    def _stream_error(
        self, exc: SlackApiError | aiohttp.ClientError | TimeoutError, method: str, channel: str
    ) -> ConnectorError:
        """A stream call's error: rate limits and network trouble as usual, anything else a refusal
        (remembered for the workspace or for ``channel``)."""
        mapped = _map_error(exc, method)
        if not isinstance(exc, SlackApiError) or isinstance(mapped, RateLimited):
            return mapped
        error = str(exc.response.get("error", ""))
        if error != NOT_STREAMING:  # that one is about one message, not the feature
            self.refusals.note("" if error in WORKSPACE_REFUSALS else channel)
        return NativeRefused(f"Slack {method} refused: {error or exc}")

    async def _send_ephemeral(self, destination: Destination, handle: CommandHandle, text: str) -> SentMessage:
        """Show ``text`` to the command's caller only; it cannot be edited afterwards."""
        try:
            response = await self.client.chat_postEphemeral(
                channel=destination.channel, user=handle.user, text=to_mrkdwn(text)
            )
        except SlackApiError as exc:
            if exc.response.get("error") in NOT_A_MEMBER and await self._respond(handle, text):
                return SentMessage(id="", destination=destination)
            raise _map_error(exc, "chat.postEphemeral") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, "chat.postEphemeral") from exc
        return SentMessage(id=str(response.get("message_ts", "")), destination=destination)

    async def _respond(self, handle: CommandHandle, text: str) -> bool:
        """Answer the caller through the command's ``response_url`` (valid 30 min); True if it worked."""
        if not handle.response_url:
            return False
        try:
            webhook = AsyncWebhookClient(handle.response_url, timeout=RESPOND_TIMEOUT)
            response = await webhook.send_dict({"response_type": "ephemeral", "text": to_mrkdwn(text)})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack: response_url failed: %r", exc)
            return False
        if response.status_code != 200:
            log.warning("slack: response_url answered HTTP %s: %s", response.status_code, response.body)
        return response.status_code == 200


class ChatStream(NativeStream):
    """One message of a reply streamed into a thread with Slack's ``chat.*Stream`` methods.

    Slack appends; it cannot take text back. Text that no longer extends what was appended (a
    rollover cut shorter) waits for :meth:`finish`, which then stops the stream unsettled, and
    the core sets the message's text with ``chat.update``.
    """

    pacing = STREAM_PACING

    def __init__(self, connector: SlackConnector, destination: Destination) -> None:
        self._connector = connector
        self._destination = destination
        self._appended = ""

    @property
    def _client(self) -> AsyncWebClient:
        return self._connector.client

    def _refused(self, exc: SlackApiError | aiohttp.ClientError | TimeoutError, method: str) -> ConnectorError:
        return self._connector._stream_error(exc, method, self._destination.channel)

    async def start(self) -> None:
        destination = self._destination
        assert destination.thread is not None
        user = team = None
        if not is_direct_channel(destination.channel):  # "Required when streaming to channels"
            user, team = destination.user, self._connector.team_id
        try:
            response = await self._client.chat_startStream(
                channel=destination.channel,
                thread_ts=destination.thread,
                recipient_user_id=user,
                recipient_team_id=team,
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise self._refused(exc, "chat.startStream") from exc
        self.message = SentMessage(id=str(response["ts"]), destination=destination)
        if not is_direct_channel(destination.channel):
            self._connector._threads.add((destination.channel, destination.thread))

    def _ts(self) -> str:
        assert self.message is not None, "start() first"
        return self.message.id

    async def _append(self, text: str) -> None:
        for at in range(0, len(text), STREAM_CHUNK):
            chunk = text[at : at + STREAM_CHUNK]
            try:
                await self._client.chat_appendStream(
                    channel=self._destination.channel, ts=self._ts(), markdown_text=chunk
                )
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                raise self._refused(exc, "chat.appendStream") from exc
            self._appended += chunk

    async def update(self, text: str) -> None:
        if text.startswith(self._appended) and len(text) > len(self._appended):
            await self._append(text[len(self._appended) :])

    async def finish(self, text: str) -> SentMessage:
        extends = text.startswith(self._appended)
        if extends and len(text) - len(self._appended) > STREAM_CHUNK:
            await self._append(text[len(self._appended) : len(text) - STREAM_CHUNK])
        last = text[len(self._appended) :] if extends else ""
        try:
            await self._client.chat_stopStream(
                channel=self._destination.channel, ts=self._ts(), markdown_text=last or None
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise self._refused(exc, "chat.stopStream") from exc
        assert self.message is not None
        self.settled = extends  # otherwise the core sets the text with chat.update
        return self.message

    async def abandon(self, shown: str) -> SentMessage | None:
        if self.message is None:
            return None
        try:
            await self._client.chat_stopStream(channel=self._destination.channel, ts=self.message.id)
        except SlackApiError as exc:
            if exc.response.get("error") != NOT_STREAMING:
                raise _map_error(exc, "chat.stopStream") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, "chat.stopStream") from exc
        return self.message


def _refuse(status: int, error: str, why: str) -> web.Response:
    log.warning("slack: refused a request to %s: %s", EVENTS_PATH, why)
    return web.json_response({"ok": False, "error": error}, status=status)
