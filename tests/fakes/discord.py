"""A wire-level fake of Discord for tests: REST and a JSON gateway on 127.0.0.1 (aiohttp).

It speaks just enough of the real protocol for an unpatched discord.py client:

- REST under ``/api/v10`` with ``Content-Type: application/json`` exactly (discord.py reads the body
  as text otherwise): login (``/users/@me``, ``/oauth2/applications/@me``), ``/gateway``,
  ``/gateway/bot``, posting and editing messages, the typing indicator. Every call is recorded
  with its loop time in :attr:`FakeDiscord.calls`.
- ``X-RateLimit-*`` headers from a 5-per-5-s bucket, as Discord does; a call over the bucket is
  answered 429 (with ``Via``, so discord.py treats it as Discord's own) and recorded in
  :attr:`FakeDiscord.rejected`. Strict (the default): one sliding 5 s window per channel over every
  message write there (posts, edits, interaction followups and their edits). ``strict=False``: a
  fixed window per route and channel. :meth:`FakeDiscord.reject_next_edit` injects a 429.
- The gateway: HELLO, heartbeat ACKs, IDENTIFY → READY + GUILD_CREATE, dispatches with sequence
  numbers, op 7 on demand (:meth:`FakeDiscord.force_reconnect`) and RESUME → replay of every event
  the client missed, then RESUMED. Events raised while no client is connected wait for the resume.
- Slash commands: bulk overwrite of application commands (global and per guild, checked like
  Discord checks them, kept in :attr:`FakeDiscord.registered`); :meth:`FakeDiscord.use_command`
  dispatches INTERACTION_CREATE (APPLICATION_COMMAND, typed options, member permissions); the
  callback (``?with_response=1`` → InteractionCallbackResponse; later than 3 s → 10062 Unknown
  interaction), the original response (GET/PATCH/DELETE ``@original``) and followups (POST, PATCH;
  flags 64 = ephemeral). As on Discord, a followup sent while the deferred "thinking" message is
  still there fills that message and keeps the deferral's visibility. Each interaction's answers are
  in :attr:`FakeInteraction.answers` (original first, deleted ones marked ``deleted``).
- Attachments: :meth:`FakeDiscord.user_says` takes files, listed on the message as Discord lists
  them (``id``, ``filename``, ``size``, ``content_type``, a signed CDN ``url``) and served at
  ``GET /attachments/<channel>/<id>/<filename>?ex=…&is=…&hm=…`` only with the right signature (403
  otherwise, as the CDN answers an expired or forged link); :attr:`FakeDiscord.downloads` records them.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
BUCKET_CALLS = 5
BUCKET_SECONDS = 5.0
JSON = "application/json"  # exactly: discord.py compares the header with ==
MANAGE_GUILD = 1 << 5
EPHEMERAL = 1 << 6
LOADING = 1 << 7
DEFER_DEADLINE = 3.0
OPTION_NAME = re.compile(r"^[-_\w]{1,32}$")
OPTION_TYPES = {3, 4, 5, 10}


@dataclass
class Call:
    at: float
    method: str
    path: str
    channel: str = ""
    message: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    interaction: str = ""


@dataclass
class FakeInteraction:
    """One slash command use and what the bot answered."""

    id: str
    token: str
    name: str
    channel: str
    at: float
    """Loop time of the INTERACTION_CREATE dispatch."""
    acked_at: float | None = None
    ephemeral: bool = False
    """Whether the deferral was ephemeral."""
    state: str = "new"
    """The original response: new, loading (deferred), filled or deleted."""
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def original(self) -> dict[str, Any] | None:
        return self.answers[0] if self.answers and self.answers[0].get("interaction_original") else None

    def visible(self) -> list[dict[str, Any]]:
        """The answers still shown (to someone), in order."""
        return [m for m in self.answers if not m.get("deleted") and not m["flags"] & LOADING]


@dataclass
class _Bucket:
    opened: float = 0.0
    used: int = 0


@dataclass
class _Session:
    id: str
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)


def _user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": user_id, "username": name, "global_name": name, "discriminator": "0", "avatar": None, "bot": bot}


class FakeDiscord:
    """One bot, one guild with a text channel and a public thread, DMs with any user."""

    token = "fake-discord-token"

    def __init__(self, heartbeat_ms: int = 10_000, *, strict: bool = True) -> None:
        self.strict = strict
        self._ids = itertools.count(1)
        self.bot = _user(self.snowflake(), "parley", bot=True)
        self.app_id = self.snowflake()
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.thread_id = self.snowflake()
        self.heartbeat_ms = heartbeat_ms
        self.app_flags = 0
        """The application's ``flags`` (``/oauth2/applications/@me``): intents enabled in the portal."""
        self.calls: list[Call] = []
        self.rejected: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.registered: dict[str, list[dict[str, Any]]] = {}
        """Application commands by scope: "global" or a guild id."""
        self.interactions: dict[str, FakeInteraction] = {}
        self.identifies = 0
        self.last_identify: dict[str, Any] = {}
        self.resumes = 0
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._writes: dict[str, collections.deque[float]] = {}
        """Accepted message writes per channel in the last 5 s (strict)."""
        self._inject_429: list[float] = []
        self._session: _Session | None = None
        self._ws: web.WebSocketResponse | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.files: dict[str, bytes] = {}
        """Attachment bytes by ``<channel>/<id>/<filename>``."""
        self.downloads: list[str] = []

    # lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{filename}", self._cdn)
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{api}/gateway", self._gateway_info)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_info)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._post_message)
        app.router.add_patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._edit_message)
        app.router.add_post(f"{api}/channels/{{channel}}/typing", self._typing)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._put_commands)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._put_commands)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        hook = f"{api}/webhooks/{{app}}/{{token}}"
        app.router.add_post(hook, self._followup)
        app.router.add_get(f"{hook}/messages/{{message}}", self._webhook_message)
        app.router.add_patch(f"{hook}/messages/{{message}}", self._webhook_message)
        app.router.add_delete(f"{hook}/messages/{{message}}", self._webhook_message)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def snowflake(self) -> str:
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(self._ids))

    # what tests look at

    def edits(self, channel: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == "PATCH" and c.status == 200 and channel in (None, c.channel)]

    def posts(self, channel: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.message and channel in (None, c.channel)]

    def max_edits_in_window(self, channel: str, seconds: float) -> int:
        times = [c.at for c in self.edits(channel)]
        return max((sum(1 for t in times if start <= t < start + seconds) for start in times), default=0)

    def reject_next_edit(self, retry_after: float) -> None:
        """Answer the next edit with a 429 carrying ``retry_after``."""
        self._inject_429.append(retry_after)

    # REST

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise web.HTTPUnauthorized(text=json.dumps({"message": "401: Unauthorized", "code": 0}), content_type=JSON)

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON, **(headers or {})}
        )

    async def _me(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(self.bot)

    async def _application(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        return self._json(
            {
                "id": self.app_id,
                "name": "parley",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": _user(self.snowflake(), "owner"),
                "verify_key": "0" * 64,
                "flags": self.app_flags,
            }
        )

    async def _gateway_info(self, request: web.Request) -> web.Response:
        self.calls.append(Call(asyncio.get_running_loop().time(), "GET", request.path))
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return self._json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    def _window(self, route: str, channel: str, now: float) -> tuple[int, float, str]:
        """Calls already accepted in the bucket, seconds until it frees a place, its name."""
        if self.strict:
            times = self._writes.setdefault(channel, collections.deque())
            while times and times[0] <= now - BUCKET_SECONDS:
                times.popleft()
            return len(times), (times[0] + BUCKET_SECONDS - now) if times else BUCKET_SECONDS, "channel-writes"
        bucket = self._buckets.setdefault((route, channel), _Bucket())
        # A few ms of slack: requests paced exactly 5 s apart can arrive with network jitter.
        if now >= bucket.opened + BUCKET_SECONDS - 0.05:
            bucket.opened, bucket.used = now, 0
        return bucket.used, max(0.0, bucket.opened + BUCKET_SECONDS - now), route

    def _count(self, route: str, channel: str, now: float) -> None:
        if self.strict:
            self._writes[channel].append(now)
        else:
            self._buckets[(route, channel)].used += 1

    def _rate_limit(self, route: str, channel: str, call: Call) -> web.Response | None:
        """Refuse a call over the bucket; the headers say where the bucket stands."""
        now = asyncio.get_running_loop().time()
        used, reset_after, name = self._window(route, channel, now)
        injected = self._inject_429.pop(0) if route == "edit" and self._inject_429 else None
        if injected is None and used < BUCKET_CALLS:
            self._count(route, channel, now)
            call.body["_headers"] = {
                "X-RateLimit-Limit": str(BUCKET_CALLS),
                "X-RateLimit-Remaining": str(BUCKET_CALLS - used - 1),
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": name,
            }
            return None
        retry_after = injected if injected is not None else reset_after
        if injected is not None:
            call.body["_injected"] = True
        call.status = 429
        self.rejected.append(call)
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        headers = {"Via": "1.1 google", "Retry-After": str(max(1, round(retry_after))), "X-RateLimit-Scope": "user"}
        return self._json(body, 429, headers)

    def _message(self, channel: str, author: dict[str, Any], content: str, **extra: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.snowflake(),
            "channel_id": channel,
            "author": author,
            "content": content,
            "timestamp": "2025-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if channel in (self.channel_id, self.thread_id):
            message["guild_id"] = self.guild_id
        message.update(extra)
        self.messages[message["id"]] = message
        return message

    @staticmethod
    def _signature(path: str) -> str:
        return hashlib.sha256(f"cdn-secret:{path}".encode()).hexdigest()[:32]

    def _attachment(self, channel: str, name: str, mime: str, data: bytes) -> dict[str, Any]:
        attachment_id = self.snowflake()
        path = f"{channel}/{attachment_id}/{name}"
        self.files[path] = data
        url = f"http://127.0.0.1:{self.port}/attachments/{path}?ex=67a0c0de&is=679f6f5e&hm={self._signature(path)}&"
        return {
            "id": attachment_id,
            "filename": name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": mime,
        }

    async def _cdn(self, request: web.Request) -> web.Response:
        info = request.match_info
        path = f"{info['channel']}/{info['id']}/{info['filename']}"
        if path not in self.files:
            return web.Response(status=404, text="Not Found")
        if request.query.get("hm") != self._signature(path):
            return web.Response(status=403, text="This content is no longer available.")
        self.downloads.append(path)
        return web.Response(body=self.files[path], content_type="application/octet-stream")

    async def _post_message(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        channel = request.match_info["channel"]
        body = await request.json()
        call = Call(asyncio.get_running_loop().time(), "POST", request.path, channel, body=body)
        self.calls.append(call)
        refused = self._rate_limit("post", channel, call)
        if refused is not None:
            return refused
        if len(body.get("content", "")) > 2000:
            call.status = 400
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": "length"}, 400)
        extra: dict[str, Any] = {}
        if body.get("message_reference"):
            extra = {"type": 19, "message_reference": body["message_reference"]}
        message = self._message(channel, self.bot, body.get("content", ""), **extra)
        call.message = message["id"]
        call.body["allowed_mentions"] = body.get("allowed_mentions")
        await self.dispatch("MESSAGE_CREATE", message)  # Discord echoes the bot's own messages
        return self._json(message, headers=call.body.pop("_headers"))

    async def _edit_message(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        channel, message_id = request.match_info["channel"], request.match_info["message"]
        body = await request.json()
        call = Call(asyncio.get_running_loop().time(), "PATCH", request.path, channel, message_id, body)
        self.calls.append(call)
        refused = self._rate_limit("edit", channel, call)
        if refused is not None:
            return refused
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel:
            call.status = 404
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        if len(body.get("content", "")) > 2000:
            call.status = 400
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": "length"}, 400)
        message["content"] = body.get("content", message["content"])
        message["edited_timestamp"] = "2025-01-01T00:00:01+00:00"
        return self._json(message, headers=call.body.pop("_headers"))

    async def _typing(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        self.calls.append(Call(asyncio.get_running_loop().time(), "POST", request.path, request.match_info["channel"]))
        return web.Response(status=204)

    # application commands and interactions

    @staticmethod
    def _command_problem(command: dict[str, Any]) -> str | None:
        """What Discord would refuse in a CHAT_INPUT command, or ``None``."""
        if command.get("type", 1) != 1 or not re.fullmatch(r"[a-z0-9_-]{1,32}", str(command.get("name"))):
            return "name"
        if not 1 <= len(command.get("description", "")) <= 100:
            return "description"
        options = command.get("options", [])
        if len(options) > 25:
            return "options"
        seen_optional = False
        for option in options:
            if option.get("type") not in OPTION_TYPES or not OPTION_NAME.match(str(option.get("name"))):
                return "option type or name"
            if option["name"] != option["name"].lower() or not 1 <= len(option.get("description", "")) <= 100:
                return "option name or description"
            if option.get("required") and seen_optional:
                return "required options must be placed before non-required options"
            seen_optional = seen_optional or not option.get("required")
            if len(option.get("choices", [])) > 25 or ("choices" in option and option["type"] == 5):
                return "choices"
            if "max_length" in option and (option["type"] != 3 or not 1 <= option["max_length"] <= 6000):
                return "max_length"
        return None

    async def _put_commands(self, request: web.Request) -> web.Response:
        self._check_auth(request)
        body = await request.json()
        scope = request.match_info.get("guild", "global")
        call = Call(asyncio.get_running_loop().time(), "PUT", request.path, body={"commands": body})
        self.calls.append(call)
        if request.match_info["app"] != self.app_id or scope not in ("global", self.guild_id):
            call.status = 403
            return self._json({"message": "Missing Access", "code": 50001}, 403)
        for command in body:
            problem = self._command_problem(command)
            if problem is not None:
                call.status = 400
                return self._json({"message": "Invalid Form Body", "code": 50035, "errors": problem}, 400)
        stored = [
            {**command, "id": self.snowflake(), "application_id": self.app_id, "version": self.snowflake()}
            for command in body
        ]
        self.registered[scope] = stored
        return self._json(stored)

    def registered_command(self, name: str, scope: str = "global") -> dict[str, Any]:
        return next(c for c in self.registered.get(scope, []) if c["name"] == name)

    async def use_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: tuple[str, str] = ("1001", "alice"),
        where: str = "channel",
        permissions: int = 0,
    ) -> FakeInteraction:
        """A user runs ``/name`` with typed ``options`` (sent as given, like Discord's client would
        not: tests may send values outside the choices); ``permissions`` are the member's."""
        author = _user(*user)
        dm_channel = str(9_000_000 + int(user[0]))
        channel = {"dm": dm_channel, "channel": self.channel_id, "thread": self.thread_id}[where]
        known = {c["name"]: c for scope in self.registered.values() for c in scope}
        declared = {o["name"]: o["type"] for o in known.get(name, {}).get("options", [])}
        typed = {bool: 5, int: 4, float: 10}
        data: dict[str, Any] = {"id": known.get(name, {}).get("id", self.snowflake()), "name": name, "type": 1}
        if options:
            data["options"] = [
                {"name": key, "type": declared.get(key, typed.get(type(value), 3)), "value": value}
                for key, value in options.items()
            ]
        interaction = FakeInteraction(
            self.snowflake(), f"token-{next(self._ids)}", name, channel, asyncio.get_running_loop().time()
        )
        self.interactions[interaction.id] = interaction
        payload: dict[str, Any] = {
            "id": interaction.id,
            "application_id": self.app_id,
            "type": 2,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "channel_id": channel,
            "locale": "en-US",
            "app_permissions": "2248473465835073",
            "entitlements": [],
            "attachment_size_limit": 8_388_608,
        }
        if where == "dm":
            payload |= {"user": author, "context": 1, "channel": {"id": channel, "type": 1, "recipients": [author]}}
        else:
            kind = {"channel": 0, "thread": 11}[where]
            raw_channel: dict[str, Any] = {"id": channel, "type": kind, "guild_id": self.guild_id, "name": where}
            if where == "thread":
                raw_channel["parent_id"] = self.channel_id
            member = {
                "user": author,
                "roles": [],
                "joined_at": "2025-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(permissions),
            }
            payload |= {"guild_id": self.guild_id, "guild_locale": "en-US", "context": 0}
            payload |= {"channel": raw_channel, "member": member}
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _interaction_message(self, interaction: FakeInteraction, content: str, flags: int) -> dict[str, Any]:
        message = self._message(
            interaction.channel,
            self.bot,
            content,
            flags=flags,
            webhook_id=self.app_id,
            application_id=self.app_id,
            type=20,
            interaction_metadata={"id": interaction.id, "type": 2, "user": _user("0", "caller")},
        )
        interaction.answers.append(message)
        return message

    async def _callback(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        body = await request.json()
        interaction = self.interactions.get(request.match_info["id"])
        call = Call(now, "POST", request.path, body=body, interaction=request.match_info["id"])
        self.calls.append(call)
        if interaction is None or interaction.token != request.match_info["token"]:
            call.status = 404
            return self._json({"message": "Unknown interaction", "code": 10062}, 404)
        call.channel = interaction.channel
        if now - interaction.at > DEFER_DEADLINE:
            call.status = 404
            return self._json({"message": "Unknown interaction", "code": 10062}, 404)
        if interaction.acked_at is not None:
            call.status = 400
            return self._json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        interaction.acked_at = now
        flags = int((body.get("data") or {}).get("flags", 0))
        interaction.ephemeral = bool(flags & EPHEMERAL)
        if body.get("type") == 5:
            message = self._interaction_message(interaction, "", (flags & EPHEMERAL) | LOADING)
            interaction.state = "loading"
        elif body.get("type") == 4:
            message = self._interaction_message(interaction, body["data"].get("content", ""), flags & EPHEMERAL)
            interaction.state = "filled"
        else:
            call.status = 400
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": "type"}, 400)
        message["interaction_original"] = True
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        answer = {
            "id": interaction.id,
            "type": 2,
            "response_message_id": message["id"],
            "response_message_loading": body["type"] == 5,
            "response_message_ephemeral": interaction.ephemeral,
        }
        return self._json({"interaction": answer, "resource": {"type": body["type"], "message": message}})

    def _interaction_for(self, request: web.Request) -> FakeInteraction | None:
        if request.match_info["app"] != self.app_id:
            return None
        token = request.match_info["token"]
        return next((i for i in self.interactions.values() if i.token == token and i.acked_at is not None), None)

    async def _followup(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        body = await request.json()
        interaction = self._interaction_for(request)
        call = Call(now, "POST", request.path, body=body)
        self.calls.append(call)
        if interaction is None:
            call.status = 404
            return self._json({"message": "Unknown Webhook", "code": 10015}, 404)
        call.channel, call.interaction = interaction.channel, interaction.id
        refused = self._rate_limit("webhook-post", interaction.channel, call)
        if refused is not None:
            return refused
        headers = call.body.pop("_headers")
        if len(body.get("content", "")) > 2000:
            call.status = 400
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": "length"}, 400)
        original = interaction.original
        if interaction.state == "loading" and original is not None:
            # Discord: the first followup after a deferral fills the "thinking" message, keeping its flags.
            original["content"] = body.get("content", "")
            original["flags"] &= ~LOADING
            interaction.state = "filled"
            call.message = original["id"]
            return self._json(original, headers=headers)
        flags = int(body.get("flags", 0)) & EPHEMERAL
        message = self._interaction_message(interaction, body.get("content", ""), flags)
        call.message = message["id"]
        return self._json(message, headers=headers)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        method = request.method
        body = await request.json() if method == "PATCH" else {}
        interaction = self._interaction_for(request)
        call = Call(now, method, request.path, body=body)
        self.calls.append(call)
        unknown = self._json({"message": "Unknown Message", "code": 10008}, 404)
        if interaction is None:
            call.status = 404
            return self._json({"message": "Unknown Webhook", "code": 10015}, 404)
        call.channel, call.interaction = interaction.channel, interaction.id
        wanted = request.match_info["message"]
        message = interaction.original if wanted == "@original" else self.messages.get(wanted)
        if message is None or message not in interaction.answers or message.get("deleted"):
            call.status = 404
            return unknown
        call.message = message["id"]
        if method == "GET":
            return self._json(message)
        if method == "DELETE":
            message["deleted"] = True
            if message.get("interaction_original"):
                interaction.state = "deleted"
            return web.Response(status=204)
        refused = self._rate_limit("webhook-edit", interaction.channel, call)
        if refused is not None:
            return refused
        headers = call.body.pop("_headers")
        if len(body.get("content", "")) > 2000:
            call.status = 400
            return self._json({"message": "Invalid Form Body", "code": 50035, "errors": "length"}, 400)
        message["content"] = body.get("content", message["content"])
        message["flags"] &= ~LOADING
        if message.get("interaction_original"):
            interaction.state = "filled"
        return self._json(message, headers=headers)

    # gateway

    def _guild(self) -> dict[str, Any]:
        everyone = {"id": self.guild_id, "name": "@everyone", "permissions": "68608", "position": 0, "color": 0}
        thread = {
            "id": self.thread_id,
            "guild_id": self.guild_id,
            "parent_id": self.channel_id,
            "owner_id": self.snowflake(),
            "name": "a thread",
            "type": 11,
            "member_count": 2,
            "message_count": 0,
            "rate_limit_per_user": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": "2025-01-01T00:00:00+00:00",
                "locked": False,
            },
        }
        channel = {"id": self.channel_id, "guild_id": self.guild_id, "name": "general", "type": 0, "position": 0}
        return {
            "id": self.guild_id,
            "name": "Parley test guild",
            "unavailable": False,
            "owner_id": self.snowflake(),
            "member_count": 3,
            "large": False,
            "features": [],
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "channels": [{**channel, "permission_overwrites": []}],
            "threads": [thread],
            "members": [],
            "voice_states": [],
            "presences": [],
        }

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Raise a gateway event; it waits in the session log if no client is connected."""
        session = self._session
        if session is None:
            return
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(payload)
        if self._ws is not None:
            await self._send(self._ws, payload)

    async def force_reconnect(self) -> None:
        """Send op 7: the client must drop the connection and RESUME."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await self._send(ws, {"op": 7, "d": None, "s": None, "t": None})

    async def end_session(self, code: int = 4004) -> None:
        """Close the gateway connection with a code the client must not reconnect after
        (4004 "Authentication failed", as when the bot's token is reset)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close(code=code, message=b"Authentication failed.")

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._send(ws, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None})
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    break
                await self._on_frame(ws, json.loads(frame.data))
        finally:
            self._sockets.discard(ws)
            if self._ws is ws:
                self._ws = None
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d") or {}
        if op == 1:
            # discord.py notes the heartbeat's send time only after its send completes; an ACK on
            # loopback can beat that and reads as "10 s behind". Real Discord takes tens of ms.
            await asyncio.sleep(0.05)
            await self._send(ws, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            if data["token"] != self.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identifies += 1
            self.last_identify = data
            self._session = _Session(id=f"session-{self.identifies}")
            self._ws = ws
            ready = {
                "v": 10,
                "user": self.bot,
                "guilds": [{"id": self.guild_id, "unavailable": True}],
                "session_id": self._session.id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.app_id, "flags": 0},
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            await self.dispatch("READY", ready)
            await self.dispatch("GUILD_CREATE", self._guild())
        elif op == 6:
            session = self._session
            if session is None or data["session_id"] != session.id:
                await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
                return
            self.resumes += 1
            for payload in session.log:
                if payload["s"] > (data.get("seq") or 0):
                    await self._send(ws, payload)
            self._ws = ws
            await self.dispatch("RESUMED", {})

    # what users do

    async def user_says(
        self,
        content: str,
        *,
        user: tuple[str, str] = ("1001", "alice"),
        where: str = "dm",
        mention: bool = False,
        reply_to: str | None = None,
        files: Sequence[tuple[str, str, bytes]] = (),
    ) -> str:
        """A user posts a message; ``where`` is "dm", "channel" or "thread". Returns its id.

        ``files`` are attachments: (file name, MIME type, bytes) each."""
        author = _user(*user)
        dm_channel = str(9_000_000 + int(user[0]))
        channel = {"dm": dm_channel, "channel": self.channel_id, "thread": self.thread_id}[where]
        extra: dict[str, Any] = {}
        if mention:
            content = f"<@{self.bot['id']}> {content}"
            extra["mentions"] = [self.bot]
        if reply_to is not None:
            extra.update(
                type=19,
                message_reference={"message_id": reply_to, "channel_id": channel, "guild_id": self.guild_id},
                referenced_message=self.messages[reply_to],
            )
        if files:
            extra["attachments"] = [self._attachment(channel, *file) for file in files]
        message = self._message(channel, author, content, **extra)
        await self.dispatch("MESSAGE_CREATE", message)
        return str(message["id"])
