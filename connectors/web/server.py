"""Parley's own channel: a chat page and an HTTP API on aiohttp.

Routes::

    GET  /                           the chat page (static, no build step)
    GET  /static/...                 the page's script, styles and vendored libraries
    POST /api/chat                   ask; streams text/event-stream, or one JSON object with "stream": false
    GET  /api/conversations          the caller's conversations, most recently active first (?limit=1..200)
    GET  /api/conversations/{id}     a conversation's turns
    GET  /healthz                    200 with component status once ready, 503 before
    GET  /metrics                    Prometheus metrics (text format); needs a key when keys are set

``/api/*`` needs ``Authorization: Bearer <key>`` when ``PARLEY_WEB__API_KEYS`` is set (it must be
set when the server listens beyond loopback). Each key sees only its own conversations. Every
error is JSON: ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import uuid4

from aiohttp import web

from bot.app import Parley
from bot.conversation import CommandRequest, ConversationKey, IncomingMessage
from bot.engine import QueueStatus
from bot.errors import ContextOverflow, EngineBusy, ParleyError
from bot.exchange import Exchange
from bot.logs import reply_context
from bot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bot.models import NOT_LOADED
from bot.settings import WebSettings
from bot.store import TurnStatus
from bot.waiting import notices

log = logging.getLogger(__name__)

PLATFORM = "web"
COMMAND = re.compile(r"^/([a-z][a-z0-9_-]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.DOTALL | re.IGNORECASE)
"""A chat message that is a command: ``/name args``."""
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What conversation ids look like (the API makes them as uuid4 hex)."""
USER = web.RequestKey("user", str)
HEALTHY = frozenset({"ready", "running", NOT_LOADED})
"""Component states of a healthy bot: a model not loaded loads when a reply first needs it."""
"""Who is asking: ``local`` without API keys, otherwise an id derived from the key."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(ParleyError):
    """An error answered to an API client as JSON: ``{"error": {"type": kind, "message": message}}``."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message, user_message=message)
        self.status = status
        self.kind = kind
        self.message = message


def error_response(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    message: str
    conversation_id: str | None
    max_tokens: int | None
    temperature: float | None
    stream: bool


def parse_chat_request(body: object, *, max_chars: int, max_tokens: int) -> ChatRequest:
    """Validate a ``POST /api/chat`` body; raise ``ApiError`` naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    message = body.get("message")
    if not isinstance(message, str):
        raise ApiError(400, "invalid_request", '"message" is required and must be a string')
    if not message.strip():
        raise ApiError(400, "invalid_request", '"message" is empty')
    if len(message) > max_chars:
        raise ApiError(413, "message_too_long", f'"message" has {len(message)} characters; the limit is {max_chars}')
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and (
        not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id)
    ):
        raise ApiError(400, "invalid_request", '"conversation_id" must be a conversation id this API returned')
    tokens = body.get("max_tokens")
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= max_tokens
    ):
        raise ApiError(400, "invalid_request", f'"max_tokens" must be an integer from 1 to {max_tokens}')
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or not 0 <= temperature <= 2
    ):
        raise ApiError(400, "invalid_request", '"temperature" must be a number from 0 to 2')
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_request", '"stream" must be true or false')
    return ChatRequest(message, conversation_id, tokens, None if temperature is None else float(temperature), stream)


async def write_event(response: web.StreamResponse, event: dict[str, Any], *, name: str | None = None) -> None:
    """One SSE event; a ``name`` (``event:`` line) sets it apart from the default text events."""
    head = b"event: " + name.encode() + b"\n" if name is not None else b""
    await response.write(head + b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")


Send = Callable[[dict[str, Any], str | None], Awaitable[None]]
"""Writes one SSE event, with an ``event:`` name or none."""


def queue_notices(exchange: Exchange, send: Send, after: float) -> contextlib.AbstractAsyncContextManager[None]:
    """While ``exchange`` waits for the engine past ``after`` s: ``event: queue`` events through ``send``,
    ``{"conversation_id", "position", "eta_seconds"}`` (rounded; ``null`` without an estimate)."""

    async def show(status: QueueStatus) -> None:
        event = {"conversation_id": exchange.conversation_id, "position": status.position}
        eta = status.eta_seconds
        await send(event | {"eta_seconds": None if eta is None else round(eta)}, "queue")

    return notices(exchange.reply, show, after=after)


class WebReplier:
    """Answers a ``/command`` sent to the API: SSE events when streaming, else one JSON object.

    Text answers are events ``{"conversation_id", "command", "text", "ephemeral"}``; a streamed model
    answer sends ``delta`` events like a chat reply (and ``queue`` events while it waits). The last
    event is ``{"conversation_id", "command", "text", "done": true}`` with every answer's text, as a
    chat reply's last event has the whole reply. Without streaming: ``{"conversation_id", "command", "text"}``.
    """

    def __init__(
        self,
        request: CommandRequest,
        conversation_id: str,
        response: web.StreamResponse | None,
        queue_notice_after: float = 0.0,
    ) -> None:
        self.queue_notice_after = queue_notice_after
        self.command = request.name
        self.conversation_id = conversation_id
        self.response = response
        self.texts: list[str] = []

    async def _send(self, event: dict[str, Any], name: str | None = None) -> None:
        """One SSE event when streaming; nothing otherwise (the JSON answer comes at :meth:`finish`)."""
        if self.response is not None:
            await write_event(self.response, event, name=name)

    async def text(self, text: str, *, ephemeral: bool = False) -> None:
        self.texts.append(text)
        event = {"conversation_id": self.conversation_id, "command": self.command, "text": text}
        await self._send(event | {"ephemeral": ephemeral})

    async def stream(self, exchange: Exchange) -> str:
        async with queue_notices(exchange, self._send, self.queue_notice_after):
            async for delta in exchange:
                await self._send({"conversation_id": self.conversation_id, "delta": delta})
        self.texts.append(exchange.text)
        return exchange.text

    async def finish(self) -> web.StreamResponse:
        body = {"conversation_id": self.conversation_id, "command": self.command, "text": "\n\n".join(self.texts)}
        if self.response is None:
            return web.json_response(body)
        await write_event(self.response, body | {"done": True})
        return self.response


def _usage(exchange: Exchange) -> dict[str, int | str | None]:
    """The reply's figures: ``finish_reason`` is ``stop`` (the model ended it), ``length`` (it ran to
    ``max_tokens``) or ``cancelled`` (``/stop``); ``dropped_messages``: history left out to fit."""
    usage = exchange.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "finish_reason": usage.finish_reason,
        "dropped_messages": usage.dropped_messages,
    }


def _status_for(exc: ParleyError) -> int:
    if isinstance(exc, ContextOverflow):
        return 413
    if isinstance(exc, EngineBusy):
        return 503
    return 500


class WebServer:
    """The web chat and HTTP API. Other connectors may ``add_route`` before ``start``."""

    name = "web"

    def __init__(self, settings: WebSettings, app: Parley) -> None:
        self.settings = settings
        self.parley = app
        self.app = web.Application(
            middlewares=[self._errors, self._auth],
            client_max_size=settings.max_message_chars * 4 + 64 * 1024,
        )
        self.app.router.add_get("/", self._page)
        self.app.router.add_static("/static/", Path(__file__).with_name("static"))
        self.app.router.add_post("/api/chat", self._chat)
        self.app.router.add_get("/api/conversations", self._conversations)
        self.app.router.add_get("/api/conversations/{conversation_id}", self._conversation)
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self._keys = {hashlib.sha256(key.encode()).hexdigest(): key for key in settings.api_keys}
        self.port: int | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.kind, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kind = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status, "http_error")
            return error_response(exc.status, kind, exc.reason)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "the server failed to answer; the error was logged")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._keys and (request.path.startswith("/api/") or request.path == "/metrics"):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            digest = hashlib.sha256(token.strip().encode()).hexdigest()
            if scheme.lower() != "bearer" or not any(hmac.compare_digest(digest, known) for known in self._keys):
                raise ApiError(401, "unauthorized", "send Authorization: Bearer <API key>")
            request[USER] = "key-" + digest[:16]
        else:
            request[USER] = "local"
        return await handler(request)

    # routes

    async def _page(self, _request: web.Request) -> web.Response:
        page = resources.files("connectors.web").joinpath("static/index.html").read_text(encoding="utf-8")
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.parley.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _health(self, _request: web.Request) -> web.Response:
        components = self.parley.status()
        ready = self.parley.ready and all(state in HEALTHY for state in components.values())
        body = {
            "status": "ok" if ready else "starting",
            "model": self.parley.engine.model_name,
            "components": components,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _conversations(self, request: web.Request) -> web.Response:
        limit = request.query.get("limit", "50")
        if not limit.isdecimal() or not 1 <= int(limit) <= 200:
            raise ApiError(400, "invalid_request", '"limit" must be an integer from 1 to 200')
        found = await self.parley.store.conversations_of(PLATFORM, request[USER], int(limit))
        return web.json_response(
            {
                "conversations": [
                    {"conversation_id": c.id, "title": c.title, "updated_at": c.updated_at, "turn_count": c.turn_count}
                    for c in found
                ]
            }
        )

    async def _conversation(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["conversation_id"]
        await self._owned(conversation_id, request[USER])
        turns = await self.parley.store.turns(conversation_id, since_reset=False)
        return web.json_response(
            {
                "conversation_id": conversation_id,
                "turns": [
                    {"role": t.role, "text": t.text, "created_at": t.created_at, "status": t.status}
                    for t in turns
                    if (t.text or t.role == "user") and t.status is not TurnStatus.SUPERSEDED
                ],
            }
        )

    async def _owned(self, conversation_id: str, user: str) -> ConversationKey:
        conversation = await self.parley.store.get_conversation(conversation_id)
        if conversation is None or conversation.key.platform != PLATFORM or conversation.key.user != user:
            raise ApiError(404, "not_found", f"no conversation {conversation_id!r}")
        return conversation.key

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self.parley.chat.accepting:
            raise ApiError(503, "shutting_down", "the bot is shutting down; try again shortly")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from None
        except RecursionError:
            raise ApiError(400, "bad_json", "the body is nested too deeply") from None
        engine = self.parley.settings.engine
        ask = parse_chat_request(body, max_chars=self.settings.max_message_chars, max_tokens=engine.max_tokens)
        user = request[USER]
        if ask.conversation_id is None:
            conversation_id = uuid4().hex
            key = ConversationKey(PLATFORM, conversation_id, None, user)
        else:
            conversation_id = ask.conversation_id
            key = await self._owned(conversation_id, user)
        command = COMMAND.match(ask.message)
        if command is not None:
            await self.parley.store.conversation(key, create_id=conversation_id)
            invocation = CommandRequest(
                platform=PLATFORM,
                channel=conversation_id,
                user=user,
                name=command.group(1),
                args=command.group(2) or "",
                is_direct=True,
                # Without API keys the server is loopback-only: whoever reaches it runs the bot.
                is_admin=not self._keys,
            )
            stream = await self._open_stream(request) if ask.stream else None
            replier = WebReplier(invocation, conversation_id, stream, self.parley.settings.queue_notice_after)
            await self.parley.chat.commands.run(invocation, replier)
            return await replier.finish()
        message = IncomingMessage(
            PLATFORM, conversation_id, user, "", ask.message, is_direct=True, is_admin=not self._keys
        )
        notes: list[str] = []
        response: web.StreamResponse | None = None
        entry = await self.parley.chat.inbox.add(message)
        assert entry is not None, "web messages carry no platform id, so they are never a redelivery"

        async def tell(note: str) -> None:
            notes.append(note)

        async def answer(verdict: IncomingMessage) -> str:
            nonlocal response
            params = self.parley.chat.params(max_tokens=ask.max_tokens, temperature=ask.temperature)
            exchange_cm = self.parley.chat.exchange(
                key, verdict.text, params, conversation_id=conversation_id, requester=user, entry=entry
            )
            if ask.stream:
                response, text = await self._stream(request, conversation_id, exchange_cm)
                return text
            try:
                async with exchange_cm as exchange:
                    async for _ in exchange:
                        pass
            except ParleyError as exc:
                raise ApiError(_status_for(exc), type(exc).__name__, exc.user_message) from exc
            response = web.json_response(
                {"conversation_id": conversation_id, "text": exchange.text, "usage": _usage(exchange)}
            )
            return exchange.text

        with reply_context(platform=PLATFORM, conversation_id=conversation_id, message_id=str(entry)):
            await self.parley.chat.process(entry, message, answer, tell)
        if response is None:
            raise ApiError(429, "rate_limited", notes[0] if notes else "too many messages; wait a little")
        return response

    @staticmethod
    async def _open_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        return response

    async def _stream(
        self, request: web.Request, conversation_id: str, exchange_cm: Any
    ) -> tuple[web.StreamResponse, str]:
        """The reply as SSE. The stream opens with its first event, so a refusal that comes before
        any (a full queue, a prompt the context cannot hold) is an HTTP error like any other."""
        response: web.StreamResponse | None = None
        text = ""

        async def send(event: dict[str, Any], name: str | None = None) -> None:
            nonlocal response
            if response is None:
                response = await self._open_stream(request)
            await write_event(response, event, name=name)

        try:
            async with exchange_cm as exchange:
                try:
                    async with queue_notices(exchange, send, self.parley.settings.queue_notice_after):
                        async for delta in exchange:
                            await send({"conversation_id": conversation_id, "delta": delta})
                except (ConnectionResetError, asyncio.CancelledError):
                    exchange.stop()  # the client left: stop generating, keep what was said
                    raise
            # Only once the reply is stored: a client that reads the history on ``done`` finds it complete.
            text = exchange.text
            await send({"conversation_id": conversation_id, "text": text, "usage": _usage(exchange), "done": True})
        except ParleyError as exc:
            log.warning("web reply in %s failed: %s", conversation_id, exc)
            if response is None:
                raise ApiError(_status_for(exc), type(exc).__name__, exc.user_message) from exc
            error = {"type": type(exc).__name__, "message": exc.user_message}
            await send({"conversation_id": conversation_id, "error": error, "done": True})
        except ConnectionResetError:
            log.info("client left during the reply in %s", conversation_id)
        if response is None:  # the client left while its stream was being opened: this reaches no one
            response = web.Response()
        return response, text
