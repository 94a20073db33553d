"""A wire-level fake of the Telegram Bot API on 127.0.0.1, for the real python-telegram-bot.

It speaks ``POST /bot<TOKEN>/<method>`` (form, multipart or JSON bodies) and answers
``{"ok": true, "result": ...}`` or Telegram's error shape. Methods: getMe, getWebhookInfo, deleteWebhook,
getUpdates (long poll; updates stay until confirmed by a later ``offset``), sendMessage,
editMessageText, sendMessageDraft, sendChatAction, setMyCommands (checked like Telegram does; the menus are kept per
scope in :attr:`FakeTelegram.menus`), getChatMember and getChatAdministrators (members' statuses come
from :attr:`FakeTelegram.members`), deleteMessage.

What tests need from it:

- every call is recorded in :attr:`FakeTelegram.calls` with its time and whether it was refused;
- HTML text is parsed like Telegram does (unknown or unbalanced tags → "can't parse entities"),
  the visible text is stored and its length checked against 4096 UTF-16 units;
- Telegram's limits are enforced in sliding windows that end at each call's arrival (``strict``,
  the default): more than ``group_per_minute`` (20) sends/edits in any 60 s in a group, more than
  ``total_per_second`` (30) in any second over all chats, a second one to a chat within
  ``min_gap`` (0.9 s: Telegram's "about one per second", less 0.1 s for the network's jitter,
  which a loaded test machine shows too), or any call while a ``retry_after`` is running is
  refused with a 429 (``parameters.retry_after``) and counted as a pacing rejection
  (``refused("pacing")``, the rule in :attr:`Call.rule`); ``strict=False`` drops the bot-wide cap;
- ``redeliver=False`` is a Bot API that never redelivers: an update is gone once fetched, confirmed
  or not, so a bot killed before storing it loses it (the real Bot API keeps unconfirmed ones);
- :meth:`FakeTelegram.fail` injects an error for the next matching call(s);
- files: :meth:`FakeTelegram.push` sends a document or a photo (its caption is the text); the bot gets
  it like from Telegram, with ``getFile`` (refused past 20 MB: "file is too big") and then
  ``GET /file/bot<TOKEN>/<file_path>``; :attr:`FakeTelegram.downloads` records each file served.

Drafts (``sendMessageDraft``) are what the Bot API documents: private chats only, a non-zero
``draft_id``, text of 0 to 4096 characters after entity parsing (empty shows "Thinking..."),
an ephemeral preview that is gone 30 s after the last draft or once a message is sent to the chat
(:meth:`FakeTelegram.visible_draft`); they are no messages, so a reply needs a final
``sendMessage``. Each is recorded in :attr:`FakeTelegram.drafts`. Telegram documents no draft
limit of its own: drafts count towards the bot-wide ``total_per_second`` and any ``retry_after``,
and ``draft_min_gap`` can set one per chat. ``refuse_drafts`` is a Bot API server from before
the method: it answers 404 "method not found".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

BOT_ID = 777000
BOT_USERNAME = "parley_test_bot"
TOKEN = "777000:TEST-token"
PACED = {"sendMessage", "editMessageText"}
DRAFT = "sendMessageDraft"
COUNTED = PACED | {DRAFT}
"""Calls that count towards the bot-wide limit."""
DRAFT_SECONDS = 30.0
"""How long a draft stays visible: "a temporary 30-second preview" (Bot API)."""
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote", "tg-spoiler"}
_JSON_FIELDS = {
    "reply_parameters",
    "allowed_updates",
    "commands",
    "entities",
    "reply_markup",
    "link_preview_options",
    "scope",
}
_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_ADMIN_RIGHTS = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": False,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
}


class EntityError(ValueError):
    pass


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TAGS:
            raise EntityError(f'Unsupported start tag "{tag}"')
        if tag == "blockquote" and "blockquote" in self.stack:
            raise EntityError("Blockquote entities can't be nested")
        if self.stack and self.stack[-1] in ("code", "pre") and not (tag == "code" and self.stack[-1] == "pre"):
            raise EntityError("Entities can't be nested in pre or code")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise EntityError(f'Unmatched end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> str:
    """The visible text of Telegram HTML; raises ``EntityError`` where Telegram would refuse it."""
    parser = _Html()
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"')
    return "".join(parser.text)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    refused: str | None = None
    """Why the fake refused the call: "pacing", "injected", "not_modified", "entities", "too_long", ..."""
    rule: str | None = None
    """For a pacing refusal, the limit it broke: "blocked", "gap", "group" or "total"."""

    @property
    def chat(self) -> int | None:
        chat = self.params.get("chat_id")
        return int(chat) if chat is not None else None


@dataclass
class BotMessage:
    chat_id: int
    message_id: int
    text: str
    source: str
    parse_mode: str | None
    thread: int | None
    reply_to: int | None
    edits: int = 0


@dataclass
class Draft:
    chat_id: int
    draft_id: int
    text: str
    """What the user sees (entities parsed); empty shows "Thinking..."."""
    source: str
    parse_mode: str | None
    thread: int | None
    at: float


@dataclass
class Fault:
    method: str
    code: int
    description: str
    parameters: dict[str, Any] | None
    when: Callable[[dict[str, Any]], bool]
    times: int


@dataclass
class Chat:
    id: int
    type: str
    title: str = ""
    is_forum: bool = False


@dataclass
class FakeTelegram:
    """The fake server; ``async with FakeTelegram() as tg:`` listens on an ephemeral port."""

    strict: bool = True
    """Telegram's documented limits, in sliding windows; ``False``: no bot-wide cap."""
    min_gap: float = 0.9
    """Seconds between two sends/edits to one chat."""
    group_per_minute: int = 20
    total_per_second: int | None = None
    """Sends/edits over all chats in any second (default 30 strict, unlimited otherwise)."""
    redeliver: bool = True
    """Whether fetched updates stay until confirmed by a later ``offset`` (the real Bot API)."""
    refuse_drafts: bool = False
    """A Bot API server without ``sendMessageDraft``: 404 "Not Found: method not found"."""
    draft_min_gap: float | None = None
    """Seconds between two drafts to one chat (Telegram documents none: ``None``)."""
    calls: list[Call] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    messages: dict[tuple[int, int], BotMessage] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Updates not fetched yet (or, with ``redeliver``, not confirmed yet)."""
    fetched: list[dict[str, Any]] = field(default_factory=list)
    """Every update a getUpdates answer carried, in order (twice if it was fetched twice)."""
    faults: list[Fault] = field(default_factory=list)
    menus: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """The command menu set per scope: "default", "all_chat_administrators", "chat:<id>", ..."""
    members: dict[tuple[int, int], str] = field(default_factory=dict)
    """(chat id, user id) → status ("creator", "administrator", "member", ...); others are members."""
    webhook_url: str = ""
    """What getWebhookInfo reports; deleteWebhook clears it (on Telegram a webhook blocks getUpdates)."""
    privacy_mode: bool = True
    """getMe's ``can_read_all_group_messages`` is its opposite (BotFather → /setprivacy)."""
    pushed: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The users' messages queued by :meth:`push`, by message id (a later push may reply to one)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Files users sent, by ``file_id`` (served through ``getFile`` and the file URL)."""
    downloads: list[str] = field(default_factory=list)
    """The ``file_path`` of every file the bot downloaded, in order."""
    _next_update: int = 1000
    _next_message: int = 1
    _blocked: dict[int, float] = field(default_factory=dict)
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    # server

    def __post_init__(self) -> None:
        if self.total_per_second is None and self.strict:
            self.total_per_second = 30

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # test helpers

    def fail(
        self,
        method: str,
        *,
        code: int = 400,
        description: str = "Bad Request",
        parameters: dict[str, Any] | None = None,
        when: Callable[[dict[str, Any]], bool] = lambda _params: True,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` matching ``when`` with this error."""
        self.faults.append(Fault(method, code, description, parameters, when, times))

    def push(
        self,
        chat: Chat,
        text: str,
        *,
        user_id: int = 42,
        first_name: str = "Ada",
        thread: int | None = None,
        reply_to: BotMessage | int | None = None,
        document: tuple[str, str, bytes] | None = None,
        photo: bytes | None = None,
        media: dict[str, Any] | None = None,
    ) -> int:
        """Queue an incoming text message as an update; returns its message id.

        ``reply_to`` is one of the bot's messages, or the id of a user's message pushed before.
        ``document`` (file name, MIME type, bytes) or ``photo`` (JPEG bytes, offered in two sizes as
        Telegram does) make it a file message whose caption is ``text`` (none if empty); ``media``
        adds other file fields as they are (``{"voice": {...}}``), never served."""
        message_id = self._next_message
        self._next_message += 1
        chat_json: dict[str, Any] = {"id": chat.id, "type": chat.type}
        if chat.type == "private":
            chat_json["first_name"] = first_name
        else:
            chat_json["title"] = chat.title or "group"
            if chat.is_forum:
                chat_json["is_forum"] = True
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat_json,
            "from": {"id": user_id, "is_bot": False, "first_name": first_name, "username": first_name.lower()},
        }
        is_file = document is not None or photo is not None or media is not None
        text_field, entities_field = ("caption", "caption_entities") if is_file else ("text", "entities")
        if text or text_field == "text":
            message[text_field] = text
        entities = _entities(text)
        if entities:
            message[entities_field] = entities
        if document is not None:
            name, mime, data = document
            message["document"] = {**self._add_file(data), "file_name": name, "mime_type": mime}
        message.update(media or {})
        if photo is not None:
            small = self._add_file(photo[: max(1, len(photo) // 4)])
            message["photo"] = [
                {**small, "width": 90, "height": 60},
                {**self._add_file(photo), "width": 1280, "height": 853},
            ]
        if thread is not None:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
            # Telegram sets the topic's service message as the reply of every topic message.
            message["reply_to_message"] = {
                "message_id": thread,
                "date": int(time.time()),
                "chat": chat_json,
                "from": {"id": user_id, "is_bot": False, "first_name": first_name},
                "forum_topic_created": {"name": "topic", "icon_color": 7322096},
            }
        if isinstance(reply_to, int):
            message["reply_to_message"] = {k: v for k, v in self.pushed[reply_to].items() if k != "reply_to_message"}
        elif reply_to is not None:
            message["reply_to_message"] = {
                "message_id": reply_to.message_id,
                "date": int(time.time()),
                "chat": chat_json,
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Parley", "username": BOT_USERNAME},
                "text": reply_to.text,
            }
        self.pushed[message_id] = message
        self.updates.append({"update_id": self._next_update, "message": message})
        self._next_update += 1
        self._new_update.set()
        return message_id

    def _add_file(self, data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()[:16]
        file_id = f"BQAC{digest}{len(self.files)}"
        self.files[file_id] = data
        return {"file_id": file_id, "file_unique_id": digest, "file_size": len(data)}

    def replies_to(self, chat_id: int, message_id: int) -> list[BotMessage]:
        """The bot's messages that reply to ``message_id``, in order."""
        found = [m for m in self.messages.values() if m.chat_id == chat_id and m.reply_to == message_id]
        return sorted(found, key=lambda m: m.message_id)

    def refused(self, reason: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.refused is not None and (reason is None or c.refused == reason)]

    def drafts_to(self, chat_id: int) -> list[Draft]:
        return [d for d in self.drafts if d.chat_id == chat_id]

    def visible_draft(self, chat_id: int, now: float | None = None) -> Draft | None:
        """The draft the chat shows now: the latest one, unless 30 s passed or a message came after it."""
        now = time.monotonic() if now is None else now
        drafts = self.drafts_to(chat_id)
        if not drafts or now - drafts[-1].at > DRAFT_SECONDS:
            return None
        sent = [c.at for c in self.calls if c.method == "sendMessage" and c.chat == chat_id and c.refused is None]
        if sent and sent[-1] > drafts[-1].at:
            return None
        return drafts[-1]

    def paced_calls(self, chat_id: int) -> list[Call]:
        return [c for c in self.calls if c.method in PACED and c.chat == chat_id and c.refused is None]

    # wire

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return _error(401, "Unauthorized")
        params = await _params(request)
        method = request.match_info["method"]
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        for fault in self.faults:
            if fault.method == method and fault.times > 0 and fault.when(params):
                fault.times -= 1
                call.status, call.refused = fault.code, "injected"
                if fault.code == 429 and fault.parameters and call.chat is not None:
                    self._blocked[call.chat] = call.at + float(fault.parameters["retry_after"])
                return _error(fault.code, fault.description, fault.parameters)
        handler = getattr(self, f"_m_{method}", None)
        if method == DRAFT and self.refuse_drafts:
            handler = None
        if handler is None:
            call.status, call.refused = 404, "unknown_method"
            return _error(404, "Not Found: method not found")
        if method in COUNTED:
            refusal = self._pacing(call)
            if refusal is not None:
                call.status, call.refused, call.rule = 429, "pacing", refusal
                return _error(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        try:
            result = await handler(params)
        except _Refused as exc:
            call.status, call.refused = exc.code, exc.reason
            return _error(exc.code, exc.description)
        return web.json_response({"ok": True, "result": result})

    def accepted_writes(self) -> list[Call]:
        """Every send and edit the fake accepted, in order."""
        return [c for c in self.calls if c.method in PACED and c.refused is None]

    def _pacing(self, call: Call) -> str | None:
        """Which limit ``call`` breaks, if any: every window slides, ending at the call's arrival."""
        chat = call.chat
        if chat is None:
            return None
        if call.at < self._blocked.get(chat, 0.0):
            return "blocked"
        if call.method == DRAFT:
            drafts = [c for c in self.calls if c.method == DRAFT and c.chat == chat and c.refused is None]
            if self.draft_min_gap is not None and drafts and call.at - drafts[-1].at < self.draft_min_gap:
                return "gap"
        else:
            earlier = [c for c in self.paced_calls(chat) if c is not call]
            if earlier and call.at - earlier[-1].at < self.min_gap:
                return "gap"
            if chat < 0 and len([c for c in earlier if c.at > call.at - 60.0]) >= self.group_per_minute:
                return "group"
        if self.total_per_second is not None:
            writes = 0
            for other in reversed(self.calls):  # in arrival order, so stop at the window's start
                if other.at <= call.at - 1.0:
                    break
                writes += other is not call and other.method in COUNTED and other.refused is None
            if writes >= self.total_per_second:
                return "total"
        return None

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Parley",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook_url = ""
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> Any:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": 0}

    async def _m_setMyCommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands") or []
        if len(commands) > 100:
            raise _Refused(400, "commands", "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _COMMAND_NAME.match(str(command.get("command", ""))):
                raise _Refused(400, "commands", "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _Refused(400, "commands", "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        scope = params.get("scope") or {"type": "default"}
        key = str(scope["type"])
        if "chat_id" in scope:
            key += f":{scope['chat_id']}"
        if "user_id" in scope:
            key += f":{scope['user_id']}"
        self.menus[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _member(self, chat_id: int, user_id: int) -> dict[str, Any]:
        status = self.members.get((chat_id, user_id), "member")
        member: dict[str, Any] = {
            "status": status,
            "user": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
        }
        if status == "administrator":
            member.update(_ADMIN_RIGHTS)
        elif status == "creator":
            member["is_anonymous"] = False
        return member

    async def _m_getChatMember(self, params: dict[str, Any]) -> Any:
        return self._member(int(params["chat_id"]), int(params["user_id"]))

    async def _m_getChatAdministrators(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        return [
            self._member(chat, user)
            for (chat, user), status in self.members.items()
            if chat == chat_id and status in ("administrator", "creator")
        ]

    async def _m_sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_deleteMessage(self, params: dict[str, Any]) -> Any:
        self.messages.pop((int(params["chat_id"]), int(params["message_id"])), None)
        return True

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id", ""))
        data = self.files.get(file_id)
        if data is None:
            raise _Refused(400, "file_id", "Bad Request: invalid file_id")
        if len(data) > 20 * 1024 * 1024:
            raise _Refused(400, "too_big", "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": file_id[4:20],
            "file_size": len(data),
            "file_path": f"documents/{file_id}",
        }

    async def _file(self, request: web.Request) -> web.Response:
        """The file URL getFile's ``file_path`` points to (needs the bot's token in the path)."""
        if request.match_info["token"] != TOKEN:
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        data = self.files.get(path.removeprefix("documents/"))
        if data is None:
            return _error(404, "Not Found")
        self.downloads.append(path)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not self.updates and time.monotonic() < deadline:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        fetched = self.updates[:limit]
        if not self.redeliver:
            del self.updates[: len(fetched)]  # gone once fetched, whatever the bot does with it
        self.fetched.extend(fetched)
        return fetched

    def _text(self, params: dict[str, Any], *, empty: bool = False) -> tuple[str, str, str | None]:
        source = str(params.get("text", ""))
        mode = params.get("parse_mode") or None
        text = source
        if mode == "HTML":
            try:
                text = parse_html(source)
            except EntityError as exc:
                raise _Refused(400, "entities", f"Bad Request: can't parse entities: {exc}") from None
        elif mode is not None:
            raise _Refused(400, "entities", f"Bad Request: unsupported parse_mode {mode}")
        if not text.strip() and not empty:
            raise _Refused(400, "empty", "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise _Refused(400, "too_long", "Bad Request: message is too long")
        return text, source, mode

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        text, source, mode = self._text(params)
        chat_id = int(params["chat_id"])
        reply = params.get("reply_parameters") or {}
        thread = int(params["message_thread_id"]) if params.get("message_thread_id") else None
        message = BotMessage(
            chat_id, self._next_message, text, source, mode, thread, reply.get("message_id") if reply else None
        )
        self._next_message += 1
        self.messages[(chat_id, message.message_id)] = message
        return self._json(message)

    async def _m_sendMessageDraft(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        if chat_id <= 0:
            raise _Refused(400, "not_private", "Bad Request: drafts can be sent to private chats only")
        try:
            draft_id = int(params.get("draft_id", 0))
        except ValueError:
            draft_id = 0
        if draft_id == 0:
            raise _Refused(400, "draft_id", "Bad Request: draft_id must be non-zero")
        text, source, mode = self._text(params, empty=True)
        thread = int(params["message_thread_id"]) if params.get("message_thread_id") else None
        self.drafts.append(Draft(chat_id, draft_id, text, source, mode, thread, time.monotonic()))
        return True

    async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        text, source, mode = self._text(params)
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise _Refused(400, "not_found", "Bad Request: message to edit not found")
        if message.source == source and message.parse_mode == mode:
            raise _Refused(
                400,
                "not_modified",
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        message.text, message.source, message.parse_mode = text, source, mode
        message.edits += 1
        return self._json(message)

    @staticmethod
    def _json(message: BotMessage) -> dict[str, Any]:
        chat_type = "private" if message.chat_id > 0 else "supergroup"
        result: dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": {"id": message.chat_id, "type": chat_type},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Parley", "username": BOT_USERNAME},
            "text": message.text,
        }
        if message.thread is not None:
            result["message_thread_id"] = message.thread
            result["is_topic_message"] = True
        return result


class _Refused(Exception):
    def __init__(self, code: int, reason: str, description: str) -> None:
        super().__init__(description)
        self.code, self.reason, self.description = code, reason, description


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = value if isinstance(value, str) else str(value)
        if key in _JSON_FIELDS:
            try:
                params[key] = json.loads(text)
                continue
            except ValueError:
                pass
        params[key] = text
    return params


def _entities(text: str) -> list[dict[str, Any]]:
    """Mention and leading-command entities, as Telegram would attach them (UTF-16 offsets)."""
    found: list[dict[str, Any]] = []
    command = _COMMAND.match(text)
    if command is not None:
        found.append({"type": "bot_command", "offset": 0, "length": utf16_len(command.group())})
    words = text.split(" ")
    position = 0
    for word in words:
        offset = utf16_len(text[:position])
        if word.startswith("@") and len(word) > 1:
            found.append({"type": "mention", "offset": offset, "length": utf16_len(word)})
        position += len(word) + 1
    return found
