"""Answering an interaction: the deferral, the original response, followups.

Every call goes through discord.py's ``HTTPClient`` (the client's own REST session), not through
``discord.Interaction``'s helpers: those use discord.py's webhook adapter, which sleeps out every
429 itself, however long. The HTTP client tracks Discord's buckets and raises ``RateLimited`` past
``PARLEY_DISCORD__RATE_LIMIT_WAIT``, so interaction answers obey the same rate-limit contract as
channel messages (the core waits, coalescing edits meanwhile).

Visibility: Discord fixes whether the deferred "thinking" message is ephemeral when we defer, and
the first followup after a deferral only fills that message, keeping its visibility. So the first
answer fills the original response when its visibility matches; when it does not (say an ephemeral
refusal after a public deferral), the thinking message is deleted first and the answer goes out as a
followup with its own visibility. Later answers (a long reply rolling over) are followups.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from discord.http import HTTPClient, Route

DEFERRED_CHANNEL_MESSAGE = 5
EPHEMERAL = 1 << 6
TOKEN_LIFETIME = 15 * 60.0
"""Seconds an interaction token can be used; we stop a little earlier."""
TOKEN_MARGIN = 30.0
NO_MENTIONS: dict[str, Any] = {"parse": []}
"""The model's text must not ping anyone."""


@dataclass(eq=False)
class InteractionHandle:
    """One interaction being answered; the connector puts it in ``Destination.handle``."""

    id: int
    token: str
    application_id: int
    ephemeral: bool
    """Whether the deferral (so the original response) is visible to the caller only."""
    expires: float
    """Loop time after which the token must not be used any more."""
    original: str | None = None
    """The original response's message id, once Discord told it."""
    pending: bool = True
    """The original response is still the deferred "thinking" message."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def expired(self) -> bool:
        return asyncio.get_running_loop().time() >= self.expires


def _webhook(method: str, handle: InteractionHandle, suffix: str = "", **parameters: Any) -> Route:
    return Route(
        method,
        "/webhooks/{webhook_id}/{webhook_token}" + suffix,
        webhook_id=handle.application_id,
        webhook_token=handle.token,
        **parameters,
    )


class InteractionReplies:
    """The REST calls that answer interactions, made with ``http`` (discord.py's client)."""

    def __init__(self, http: HTTPClient) -> None:
        self._http = http

    async def defer(
        self, interaction_id: int, token: str, application_id: int, *, ephemeral: bool
    ) -> InteractionHandle:
        """Acknowledge at once with a "thinking" response (Discord wants it within 3 s)."""
        expires = asyncio.get_running_loop().time() + TOKEN_LIFETIME - TOKEN_MARGIN
        handle = InteractionHandle(interaction_id, token, application_id, ephemeral, expires)
        body: dict[str, Any] = {"type": DEFERRED_CHANNEL_MESSAGE}
        if ephemeral:
            body["data"] = {"flags": EPHEMERAL}
        route = Route(
            "POST",
            "/interactions/{interaction_id}/{webhook_token}/callback",
            interaction_id=interaction_id,
            webhook_token=token,
        )
        answer = await self._http.request(route, json=body, params={"with_response": "1"})
        if isinstance(answer, dict):  # an InteractionCallbackResponse
            message_id = (answer.get("interaction") or {}).get("response_message_id")
            handle.original = None if message_id is None else str(message_id)
        return handle

    async def send(self, handle: InteractionHandle, text: str, *, ephemeral: bool) -> str:
        """Post ``text`` as the next answer; return its message id."""
        async with handle.lock:
            if handle.pending:
                if ephemeral == handle.ephemeral:
                    message = await self._http.request(
                        _webhook("PATCH", handle, "/messages/@original"),
                        json={"content": text, "allowed_mentions": NO_MENTIONS},
                    )
                    handle.pending = False
                    handle.original = str(message["id"])
                    return handle.original
                await self._http.request(_webhook("DELETE", handle, "/messages/@original"))
                handle.pending = False
                handle.original = None
            body: dict[str, Any] = {"content": text, "allowed_mentions": NO_MENTIONS}
            if ephemeral:
                body["flags"] = EPHEMERAL
            message = await self._http.request(_webhook("POST", handle), json=body, params={"wait": "true"})
            return str(message["id"])

    async def edit(self, handle: InteractionHandle, message_id: str, text: str) -> None:
        """Replace the text of an answer (the original response or a followup)."""
        if message_id == handle.original:
            route = _webhook("PATCH", handle, "/messages/@original")
        else:
            route = _webhook("PATCH", handle, "/messages/{message_id}", message_id=message_id)
        await self._http.request(route, json={"content": text, "allowed_mentions": NO_MENTIONS})
