"""A wire-level fake of Slack on 127.0.0.1: the Web API methods Parley uses and Socket Mode.

Web API: ``POST /api/<method>`` with a Bearer token, JSON or form bodies (slack_sdk sends both;
``GET`` with query parameters for reads such as ``users.info``),
answering ``{"ok": ...}``. Implemented: ``auth.test``, ``apps.connections.open``, ``users.info``
(``is_admin`` for the users in ``admins``), ``chat.postMessage``, ``chat.update``,
``chat.postEphemeral`` and ``conversations.replies`` (a thread's root and replies, from the
messages the bot posted and the ``message`` events pushed with :meth:`FakeSlack.send_event`;
``thread_not_found`` for an unknown ``ts``, ``missing_scope`` without the channel type's
``*:history`` scope). Socket Mode: ``GET /link`` upgrades to a websocket that says ``hello``,
then carries the envelopes :meth:`FakeSlack.send_event` and :meth:`FakeSlack.send_command` push
and reads acks. Slash commands carry a ``response_url`` on the fake (``POST /respond/<id>``,
recorded in ``responses``); over HTTP, :func:`post_command` sends one form-encoded and signed.
Chat calls to a channel in ``not_member`` fail with ``not_in_channel``.

Like Slack, it posts a ``message`` event for each message the bot posts (``echo``), rejects
``chat.update`` text over 4,000 characters (``msg_too_long``) and answers 429 ``ratelimited``
with ``Retry-After`` to a chat call (``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``)
that comes sooner than ``min_gap`` seconds after the previous accepted one in the same channel:
Slack's "about one message per second" per channel (``min_gap`` 0.9 when ``strict``, the
default: a second less 0.1 s for the network's jitter; 0.5 otherwise; 0 turns it off). :meth:`FakeSlack.rate_limit`
forces 429s. Every call is recorded with its loop time, and rejected calls are marked.

Files: :meth:`FakeSlack.file` stores one and returns the file object an event's ``files`` carries
(``url_private_download`` on the fake, ``/files-pri/T1-<id>/download/<name>``). As on Slack, the
download needs the bot token as ``Authorization: Bearer`` and its ``files:read`` scope; without
them the answer is the sign-in page (200, ``text/html``). Each served file is recorded in :attr:`FakeSlack.downloads`.

Chat streams as documented: ``chat.startStream`` needs ``channel`` and ``thread_ts`` and, outside
a DM, ``recipient_user_id`` and ``recipient_team_id`` (else ``missing_recipient_user_id`` /
``…_team_id``); ``chat.appendStream`` needs ``markdown_text``; every ``markdown_text`` takes at
most 12,000 characters; appending to or stopping a message that is not streaming is
``message_not_in_streaming_state``, and ``chat.update`` of one that is, ``streaming_state_conflict``.
Start and stop post and finish a message, so they keep the per-channel ``min_gap``; appends are
Tier 4 and limited to ``appends_per_minute`` (100) per workspace in any 60 s instead. A streamed
message keeps its Markdown (``Posted.markdown``). ``refuse_streams`` (an error such as
``unknown_method``) refuses every stream method, as a workspace without the feature would;
:meth:`FakeSlack.fail` makes the next call(s) of one method fail with an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from connectors.slack.manifest import BOT_SCOPES

UPDATE_LIMIT = 4000
POST_LIMIT = 40000
STREAM_TEXT_LIMIT = 12000
STREAM_METHODS = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None

    @property
    def rejected(self) -> bool:
        return self.status != 200 or self.error is not None


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str
    at: float


@dataclass
class CommandAck:
    """A slash command pushed over Socket Mode and its ack (loop times)."""

    ack: dict[str, Any]
    sent_at: float
    acked_at: float

    @property
    def delay(self) -> float:
        return self.acked_at - self.sent_at


@dataclass
class Posted:
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    history: list[str] = field(default_factory=list)
    streaming: bool = False
    markdown: bool = False
    """The text is Markdown (a chat stream's ``markdown_text``), not mrkdwn."""
    recipient: tuple[str, str] | None = None
    """A stream's ``(recipient_user_id, recipient_team_id)``."""


class FakeSlack:
    """``async with FakeSlack() as slack:``; ``slack.url`` is the base for ``PARLEY_SLACK__API_URL``."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        bot_user: str = "UBOT",
        bot_id: str = "BBOT",
        strict: bool = True,
        min_gap: float | None = None,
        echo: bool = True,
        refuse_streams: str | None = None,
        appends_per_minute: int = 100,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.bot_user = bot_user
        self.bot_id = bot_id
        self.strict = strict
        self.min_gap = min_gap if min_gap is not None else (0.9 if strict else 0.5)
        self.echo = echo
        self.refuse_streams = refuse_streams
        self.appends_per_minute = appends_per_minute
        self._failures: dict[str, list[str]] = {}
        self.scopes: list[str] = list(BOT_SCOPES)
        """The bot token's scopes, sent as ``x-oauth-scopes`` (auth.test): as if installed from Parley's manifest."""
        self.calls: list[Call] = []
        self.messages: dict[str, Posted] = {}
        self.history: dict[tuple[str, str], dict[str, Any]] = {}
        """Every message event pushed, by ``(channel, ts)``: what ``conversations.replies`` reads."""
        self.acks: list[dict[str, Any]] = []
        self.admins: set[str] = set()
        self.not_member: set[str] = set()
        self.ephemeral: list[Ephemeral] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self._acked_at: dict[str, float] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.connected = asyncio.Event()
        self._forced: dict[str, list[float]] = {}
        self._last_accepted: dict[str, float] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ts = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []
        """The ids of the files the bot downloaded, in order."""

    # lifecycle

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk reads users.info with GET
        app.router.add_get("/link", self._socket)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/files-pri/{file}/download/{name}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what tests look at

    def calls_to(self, method: str, channel: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (channel is None or c.params.get("channel") == channel)]

    def chat_calls(self, channel: str) -> list[Call]:
        return [c for c in self.calls if c.method.startswith("chat.") and c.params.get("channel") == channel]

    @property
    def rejected(self) -> list[Call]:
        return [c for c in self.calls if c.rejected]

    def posted(self, channel: str, thread_ts: str | None = None, *, any_thread: bool = False) -> list[Posted]:
        return [m for m in self.messages.values() if m.channel == channel and (any_thread or m.thread_ts == thread_ts)]

    def fail(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def rate_limit(self, method: str, *, times: int = 1, retry_after: float = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After``."""
        self._forced.setdefault(method, []).extend([retry_after] * times)

    def file(self, name: str, mime: str, data: bytes, *, filetype: str = "text") -> dict[str, Any]:
        """Store a file a user shares; its object as a ``message`` event's ``files`` lists it."""
        file_id = f"F{len(self.files) + 1:08d}"
        self.files[file_id] = data
        url = f"{self.url}/files-pri/T1-{file_id}/download/{urllib.parse.quote(name)}"
        return {
            "id": file_id,
            "created": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mime,
            "filetype": filetype,
            "user": "U1",
            "mode": "hosted",
            "size": len(data),
            "url_private": url.replace("/download/", "/"),
            "url_private_download": url,
        }

    async def _download(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        file_id = request.match_info["file"].removeprefix("T1-")
        if token != self.bot_token or "files:read" not in self.scopes:
            return web.Response(text="<!DOCTYPE html><title>Slack</title>Sign in", content_type="text/html")
        if file_id not in self.files:
            return web.Response(status=404, text="file_not_found")
        self.downloads.append(file_id)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    # the Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.method == "GET":
            params: dict[str, Any] = dict(request.query)
        elif request.content_type == "application/json":
            params = dict(await request.json())
        else:
            params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        call = Call(method, params, asyncio.get_running_loop().time())
        self.calls.append(call)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._error(call, "invalid_auth")
        forced = self._forced.get(method)
        if forced:
            return self._limited(call, forced.pop(0))
        failures = self._failures.get(method)
        if failures:
            return self._error(call, failures.pop(0))
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "users.info": self._users_info,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.replies": self._replies,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
        }.get(method)
        if handler is None:
            return self._error(call, "unknown_method")
        if method in STREAM_METHODS and self.refuse_streams:
            return self._error(call, self.refuse_streams)
        if method.startswith("chat."):
            channel = str(params.get("channel", ""))
            if channel in self.not_member:
                return self._error(call, "not_in_channel")
            if method == "chat.appendStream":
                window = [c for c in self.calls_to(method) if not c.rejected and c is not call and c.at > call.at - 60]
                if len(window) >= self.appends_per_minute:
                    return self._limited(call, 1)
            else:
                last = self._last_accepted.get(channel)
                if last is not None and call.at - last < self.min_gap:
                    return self._limited(call, 1)
        return handler(call)

    def _error(self, call: Call, error: str) -> web.Response:
        call.error = error
        return web.json_response({"ok": False, "error": error})

    def _limited(self, call: Call, retry_after: float) -> web.Response:
        call.status, call.error = 429, "ratelimited"
        return web.json_response(
            {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(int(retry_after))}
        )

    def _auth_test(self, _call: Call) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "url": "https://fake.slack.test/",
                "team": "Fake",
                "user": "parley",
                "team_id": "T1",
                "user_id": self.bot_user,
                "bot_id": self.bot_id,
            },
            headers={"x-oauth-scopes": ",".join(self.scopes)},
        )

    def _connections_open(self, _call: Call) -> web.Response:
        return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link?ticket={uuid.uuid4().hex}"})

    def _users_info(self, call: Call) -> web.Response:
        user = str(call.params.get("user", ""))
        profile = {"display_name": f"name-{user}", "real_name": f"Real {user}"}
        person = {"id": user, "name": user.lower(), "profile": profile, "is_admin": user in self.admins}
        return web.json_response({"ok": True, "user": person | {"is_owner": False}})

    def _replies(self, call: Call) -> web.Response:
        channel, ts = str(call.params.get("channel", "")), str(call.params.get("ts", ""))
        scope = {"C": "channels:history", "G": "groups:history", "D": "im:history"}.get(channel[:1], "mpim:history")
        if scope not in self.scopes:
            return self._error(call, "missing_scope")
        try:
            limit = max(1, min(1000, int(call.params.get("limit", 1000))))
        except ValueError:
            return self._error(call, "invalid_arguments")
        thread = [self._as_event(posted) for posted in self.messages.values() if posted.channel == channel]
        thread += [event for (where, _), event in self.history.items() if where == channel]
        root = next((m for m in thread if m["ts"] == ts), None)
        if root is None:
            return self._error(call, "thread_not_found")
        replies = sorted((m for m in thread if m.get("thread_ts") == ts and m["ts"] != ts), key=lambda m: m["ts"])
        found = [root, *replies]
        return web.json_response({"ok": True, "messages": found[:limit], "has_more": len(found) > limit})

    def _as_event(self, posted: Posted) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user,
            "bot_id": self.bot_id,
            "text": posted.text,
            "ts": posted.ts,
        }
        if posted.thread_ts:
            event["thread_ts"] = posted.thread_ts
        return event

    def _post_ephemeral(self, call: Call) -> web.Response:
        channel, user = str(call.params.get("channel", "")), str(call.params.get("user", ""))
        text = str(call.params.get("text", ""))
        if not channel or not user:
            return self._error(call, "channel_not_found" if not channel else "user_not_found")
        if not text.strip():
            return self._error(call, "no_text")
        self.ephemeral.append(Ephemeral(channel, user, text, call.at))
        self._last_accepted[channel] = call.at
        return web.json_response({"ok": True, "message_ts": f"{1800000000 + next(self._ts)}.000000"})

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append((request.match_info["id"], dict(await request.json())))
        return web.Response(text="ok")

    def _post_message(self, call: Call) -> web.Response:
        channel, text = str(call.params.get("channel", "")), str(call.params.get("text", ""))
        if not channel:
            return self._error(call, "channel_not_found")
        if not text.strip():
            return self._error(call, "no_text")
        if len(text) > POST_LIMIT:
            return self._error(call, "msg_too_long")
        number = next(self._ts)
        ts = f"{1800000000 + number}.{number:06d}"
        thread = call.params.get("thread_ts")
        posted = Posted(channel, ts, str(thread) if thread else None, text, [text])
        self.messages[ts] = posted
        self._last_accepted[channel] = call.at
        self._echo(posted)
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": {"text": text, "ts": ts}})

    def _update(self, call: Call) -> web.Response:
        ts, text = str(call.params.get("ts", "")), str(call.params.get("text", ""))
        posted = self.messages.get(ts)
        if posted is None or posted.channel != call.params.get("channel"):
            return self._error(call, "message_not_found")
        if posted.streaming:
            return self._error(call, "streaming_state_conflict")
        if len(text) > UPDATE_LIMIT:
            return self._error(call, "msg_too_long")
        posted.text = text
        posted.markdown = False
        posted.history.append(text)
        self._last_accepted[posted.channel] = call.at
        return web.json_response({"ok": True, "channel": posted.channel, "ts": ts, "text": text})

    def _start_stream(self, call: Call) -> web.Response:
        params = call.params
        channel, thread = str(params.get("channel", "")), str(params.get("thread_ts") or "")
        if not channel:
            return self._error(call, "channel_not_found")
        if not thread or thread == "0":
            return self._error(call, "invalid_thread_ts")
        recipient = None
        if not channel.startswith("D"):  # "Required when streaming to channels"
            user, team = params.get("recipient_user_id"), params.get("recipient_team_id")
            if not user:
                return self._error(call, "missing_recipient_user_id")
            if not team:
                return self._error(call, "missing_recipient_team_id")
            recipient = (str(user), str(team))
        text = str(params.get("markdown_text") or "")
        if len(text) > STREAM_TEXT_LIMIT:
            return self._error(call, "msg_too_long")
        number = next(self._ts)
        ts = f"{1800000000 + number}.{number:06d}"
        posted = Posted(channel, ts, thread, text, [text], streaming=True, markdown=True, recipient=recipient)
        self.messages[ts] = posted
        self._last_accepted[channel] = call.at
        self._echo(posted)
        return web.json_response({"ok": True, "channel": channel, "ts": ts})

    def _streaming(self, call: Call) -> Posted | web.Response:
        posted = self.messages.get(str(call.params.get("ts", "")))
        if posted is None or posted.channel != call.params.get("channel"):
            return self._error(call, "message_not_found")
        if not posted.streaming:
            return self._error(call, "message_not_in_streaming_state")
        text = call.params.get("markdown_text")
        if text is not None and len(str(text)) > STREAM_TEXT_LIMIT:
            return self._error(call, "msg_too_long")
        return posted

    def _append_stream(self, call: Call) -> web.Response:
        posted = self._streaming(call)
        if isinstance(posted, web.Response):
            return posted
        text = str(call.params.get("markdown_text") or "")
        if not text:
            return self._error(call, "no_text")
        posted.text += text
        posted.history.append(posted.text)
        return web.json_response({"ok": True, "channel": posted.channel, "ts": posted.ts})

    def _stop_stream(self, call: Call) -> web.Response:
        posted = self._streaming(call)
        if isinstance(posted, web.Response):
            return posted
        posted.text += str(call.params.get("markdown_text") or "")
        posted.history.append(posted.text)
        posted.streaming = False
        self._last_accepted[posted.channel] = call.at
        message = {"text": posted.text, "ts": posted.ts, "type": "message", "bot_id": self.bot_id}
        return web.json_response({"ok": True, "channel": posted.channel, "ts": posted.ts, "message": message})

    def _echo(self, posted: Posted) -> None:
        """Slack tells the app about its own messages too; the bot must ignore them."""
        if not self.echo or not self.sockets:
            return
        event: dict[str, Any] = {
            "type": "message",
            "channel": posted.channel,
            "channel_type": "im" if posted.channel.startswith("D") else "channel",
            "user": self.bot_user,
            "bot_id": self.bot_id,
            "text": posted.text,
            "ts": posted.ts,
        }
        if posted.thread_ts:
            event["thread_ts"] = posted.thread_ts
            event["parent_user_id"] = "U1"
        task = asyncio.ensure_future(self.send_event(event, wait_ack=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        hello = {"type": "hello", "num_connections": len(self.sockets), "connection_info": {"app_id": "A1"}}
        await ws.send_str(json.dumps(hello))
        self.connected.set()
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                ack = json.loads(frame.data)
                self.acks.append(ack)
                self._acked_at[str(ack.get("envelope_id"))] = asyncio.get_running_loop().time()
                future = self._pending.pop(str(ack.get("envelope_id")), None)
                if future is not None and not future.done():
                    future.set_result(ack)
        finally:
            self.sockets.remove(ws)
        return ws

    @staticmethod
    def event_body(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The Events API ``event_callback`` wrapper around ``event``."""
        return {
            "token": "verification-token",
            "team_id": "T1",
            "api_app_id": "A1",
            "event": {"event_ts": event.get("ts", "0"), "team": "T1", **event},
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
        }

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        wait_ack: bool = True,
    ) -> dict[str, Any] | None:
        """Push an ``events_api`` envelope to the connected app; return its ack (within 5 s)."""
        await asyncio.wait_for(self.connected.wait(), 10)
        if event.get("type") == "message" and isinstance(event.get("ts"), str) and not event.get("bot_id"):
            self.history[(str(event.get("channel", "")), event["ts"])] = {"type": "message", **event}
        envelope_id = uuid.uuid4().hex
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "payload": self.event_body(event, event_id),
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if wait_ack:
            self._pending[envelope_id] = future
        await self.sockets[-1].send_str(json.dumps(envelope))
        if not wait_ack:
            return None
        return await asyncio.wait_for(future, 5)

    def command_payload(
        self, command: str, text: str = "", *, user: str = "U1", channel: str = "C1", user_name: str = ""
    ) -> dict[str, str]:
        """A slash command's payload as Slack sends it (form fields over HTTP, JSON over Socket Mode)."""
        trigger = uuid.uuid4().hex[:12]
        return {
            "token": "verification-token",
            "team_id": "T1",
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": user_name or user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/respond/{trigger}",
            "trigger_id": f"{trigger}.T1",
        }

    async def send_command(
        self, command: str, text: str = "", *, user: str = "U1", channel: str = "C1", user_name: str = ""
    ) -> CommandAck:
        """Push a ``slash_commands`` envelope; return its ack and when it came (waits up to 5 s)."""
        await asyncio.wait_for(self.connected.wait(), 10)
        envelope_id = uuid.uuid4().hex
        envelope = {
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "payload": self.command_payload(command, text, user=user, channel=channel, user_name=user_name),
            "accepts_response_payload": True,
        }
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[envelope_id] = future
        sent_at = loop.time()
        await self.sockets[-1].send_str(json.dumps(envelope))
        ack = await asyncio.wait_for(future, 5)
        return CommandAck(ack, sent_at, self._acked_at[envelope_id])


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs an HTTP request with."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


async def post_event(
    url: str,
    body: dict[str, Any],
    secret: str,
    *,
    retry_num: int | None = None,
    timestamp: int | None = None,
) -> tuple[int, str]:
    """POST a signed Events API request as Slack does; return the HTTP status and body."""
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **sign(secret, raw, timestamp)}
    if retry_num is not None:
        headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.text()


async def post_command(url: str, payload: dict[str, str], secret: str) -> tuple[int, str]:
    """POST a signed, form-encoded slash command as Slack does; return the HTTP status and body."""
    raw = urllib.parse.urlencode(payload).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(secret, raw)}
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.text()
