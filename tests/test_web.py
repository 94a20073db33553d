"""The HTTP API: the app on an ephemeral port with a real SQLite file; the model's words matter only in
the first test, which runs the real engine end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.app import Parley
from bot.errors import EngineBusy
from bot.store import TurnStatus
from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, long_story, make_app


async def sse(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = []
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
    return events


@pytest.fixture
async def app(make_settings: MakeSettings) -> AsyncIterator[Parley]:
    async with make_app(make_settings()) as parley:
        yield parley


def url(app: Parley, path: str) -> str:
    assert app.web is not None
    return app.web.url + path


async def test_the_real_model_streams_a_reply_and_keeps_the_conversation(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(), real_engine=True) as app, aiohttp.ClientSession() as http:
        async with http.post(url(app, "/api/chat"), json={"message": "My name is Ada. Say hello."}) as response:
            events = await sse(response)
        deltas = [e["delta"] for e in events if "delta" in e]
        final = events[-1]
        assert len(deltas) > 3
        assert final["done"] is True
        assert final["text"] == "".join(deltas)
        assert final["usage"]["completion_tokens"] > 0
        assert final["usage"]["finish_reason"] in {"stop", "length"}
        assert final["usage"]["dropped_messages"] == 0
        conversation_id = final["conversation_id"]
        assert all(e["conversation_id"] == conversation_id for e in events)

        body = {"message": "What is my name?", "conversation_id": conversation_id, "stream": False}
        async with http.post(url(app, "/api/chat"), json=body) as response:
            assert response.status == 200
            second = await response.json()
        assert second["conversation_id"] == conversation_id
        assert second["text"].strip()
        assert second["usage"]["finish_reason"] in {"stop", "length"}
        # The first exchange is in the second prompt.
        assert second["usage"]["prompt_tokens"] > final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"]

        body = {"message": "Tell me a story.", "max_tokens": 2, "stream": False}
        async with http.post(url(app, "/api/chat"), json=body) as response:
            cut = await response.json()
        assert cut["usage"]["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 2

        async with http.get(url(app, f"/api/conversations/{conversation_id}")) as response:
            history = await response.json()
        assert [t["role"] for t in history["turns"]] == ["user", "assistant", "user", "assistant"]
        assert history["turns"][0]["text"] == "My name is Ada. Say hello."
        assert history["turns"][1]["text"] == final["text"]
        assert history["turns"][3]["text"] == second["text"]


async def test_the_conversation_survives_a_restart(make_settings: MakeSettings) -> None:
    settings = make_settings()
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        async with http.post(url(app, "/api/chat"), json={"message": "Remember: blue.", "stream": False}) as response:
            first = await response.json()
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        conversation_id = first["conversation_id"]
        async with http.get(url(app, f"/api/conversations/{conversation_id}")) as response:
            assert response.status == 200
            turns = (await response.json())["turns"]
        assert [t["text"] for t in turns] == ["Remember: blue.", first["text"]]
        body = {"message": "Which colour?", "conversation_id": conversation_id, "stream": False}
        async with http.post(url(app, "/api/chat"), json=body) as response:
            second = await response.json()
        assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "invalid_request"),
        (b"{}", 400, "invalid_request"),
        (b'{"message": "   "}', 400, "invalid_request"),
        (b'{"message": 5}', 400, "invalid_request"),
        (b'{"message": "hi", "max_tokens": 0}', 400, "invalid_request"),
        (b'{"message": "hi", "max_tokens": true}', 400, "invalid_request"),
        (b'{"message": "hi", "temperature": 9}', 400, "invalid_request"),
        (b'{"message": "hi", "stream": "yes"}', 400, "invalid_request"),
        (b'{"message": "hi", "conversation_id": "nope"}', 404, "not_found"),
        (b'{"message": "hi", "conversation_id": "../../etc"}', 400, "invalid_request"),
        (b'{"message": "hi", "conversation_id": "\\ud800"}', 400, "invalid_request"),
        (b"[" * 5000 + b"]" * 5000, 400, "bad_json"),
        (b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "bad_json"),
        (json.dumps({"message": "x" * 8001}).encode(), 413, "message_too_long"),
        (b"x" * 200_000, 413, "request_too_large"),
    ],
)
async def test_bad_requests_get_json_errors_and_store_nothing(app: Parley, body: bytes, status: int, kind: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(url(app, "/api/chat"), data=body) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert error["type"] == kind
    assert error["message"]
    stats = await app.store.channel_stats("web", "any")
    assert stats.turns == 0
    async with app.store.db.execute("SELECT COUNT(*) FROM turns") as cursor:
        assert (await cursor.fetchone()) == (0,)


async def test_lone_surrogates_and_nul_are_cleaned_before_they_are_stored(app: Parley) -> None:
    body = b'{"message": "hi \\ud800 there\\u0000!", "stream": false}'
    async with aiohttp.ClientSession() as http, http.post(url(app, "/api/chat"), data=body) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    turns = await app.store.turns(answer["conversation_id"])
    assert turns[0].text == "hi \ufffd there!"
    assert turns[1].text == answer["text"]


async def test_a_prompt_too_long_for_the_context_is_a_413_streamed_or_not(make_settings: MakeSettings) -> None:
    """Refused before anything is streamed, so the stream is not opened: an HTTP error, as documented."""
    settings = make_settings(engine={"n_ctx": 512, "max_tokens": 32})
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        body = {"message": "lorem ipsum " * 600}
        for stream in (True, False):
            async with http.post(url(app, "/api/chat"), json=body | {"stream": stream}) as response:
                assert response.status == 413
                assert response.content_type == "application/json"
                assert (await response.json())["error"]["type"] == "ContextOverflow"
        async with http.post(url(app, "/api/chat"), json={"message": "hi", "stream": False}) as response:
            assert response.status == 200


async def test_a_refusal_before_the_first_event_is_a_503(make_settings: MakeSettings) -> None:
    engine = ScriptedEngine()
    async with make_app(make_settings(), engine) as app, aiohttp.ClientSession() as http:
        engine.fail = EngineBusy("8 replies running, 4 waiting")  # a full queue answers at once
        async with http.post(url(app, "/api/chat"), json={"message": "hi"}) as response:
            assert response.status == 503
            assert (await response.json())["error"] == {
                "type": "EngineBusy",
                "message": "The bot is busy with other replies. Please try again in a moment.",
            }
        engine.fail = None
        async with http.post(url(app, "/api/chat"), json={"message": "hi"}) as response:
            assert (await sse(response))[-1]["done"] is True


async def test_api_keys_are_required_and_scope_conversations(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"api_keys": ["alpha", "beta"]})
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        chat = url(app, "/api/chat")
        body = {"message": "hi", "stream": False}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic alpha"}):
            async with http.post(chat, json=body, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["type"] == "unauthorized"
        async with http.post(chat, json=body, headers={"Authorization": "Bearer alpha"}) as response:
            assert response.status == 200
            conversation_id = (await response.json())["conversation_id"]
        path = url(app, f"/api/conversations/{conversation_id}")
        async with http.get(path, headers={"Authorization": "Bearer alpha"}) as response:
            assert response.status == 200
        async with http.get(path, headers={"Authorization": "Bearer beta"}) as response:
            assert response.status == 404
        async with http.get(url(app, "/")) as response:
            assert response.status == 200  # the page itself holds no data; it asks for the key


async def test_health_is_503_until_ready_then_200(make_settings: MakeSettings) -> None:
    app = make_app(make_settings())
    assert app.web is not None
    await app.web.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(url(app, "/healthz")) as response:
            assert response.status == 503
    finally:
        await app.web.stop()
    async with make_app(make_settings()) as app, aiohttp.ClientSession() as http:
        async with http.get(url(app, "/healthz")) as response:
            assert response.status == 200
            health = await response.json()
        assert health["model"] == app.engine.model_name
        assert health["components"]["engine"] == "ready"


async def test_a_client_that_leaves_stops_the_reply_and_frees_the_engine(make_settings: MakeSettings) -> None:
    engine = ScriptedEngine(long_story, delay=0.01)
    async with make_app(make_settings(engine={"max_tokens": 400}), engine) as app, aiohttp.ClientSession() as http:
        response = await http.post(url(app, "/api/chat"), json={"message": "Write a very long story."})
        chunks = 0
        async for _ in response.content:
            chunks += 1
            if chunks == 6:
                break
        response.close()  # hang up mid-stream
        conversation_id = None
        for _ in range(100):
            async with app.store.db.execute(
                "SELECT conversation_id, status, text FROM turns WHERE role='assistant'"
            ) as c:
                row = await c.fetchone()
            if row and row[1] != TurnStatus.STREAMING:
                conversation_id = row[0]
                break
            await asyncio.sleep(0.05)
        assert conversation_id is not None, "the reply ended"
        assert row is not None
        assert row[1] == TurnStatus.STOPPED
        assert row[2], "the partial text is kept"
        async with http.post(url(app, "/api/chat"), json={"message": "hi", "stream": False}) as response:
            assert response.status == 200


async def test_a_streamed_reply_is_stored_complete_when_its_done_event_arrives(
    app: Parley, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_turn = app.store.update_turn

    async def slow_disk(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.2)
        await update_turn(*args, **kwargs)

    monkeypatch.setattr(app.store, "update_turn", slow_disk)
    async with aiohttp.ClientSession() as http:
        async with http.post(url(app, "/api/chat"), json={"message": "Say three words."}) as response:
            async for raw in response.content:
                event = json.loads(raw.removeprefix(b"data: ")) if raw.startswith(b"data: ") else {}
                if event.get("done"):
                    break
            else:
                raise AssertionError("no done event")
            # Read on the done event itself, before the stream closes.
            async with app.store.db.execute("SELECT status, text FROM turns WHERE role='assistant'") as c:
                rows = await c.fetchall()
    assert [tuple(r) for r in rows] == [(TurnStatus.COMPLETE, event["text"])]


async def test_shutdown_lets_a_running_reply_finish(make_settings: MakeSettings) -> None:
    app = make_app(make_settings(engine={"max_tokens": 64}), ScriptedEngine(long_story, delay=0.01))
    await app.start()
    async with aiohttp.ClientSession() as http:
        response = await http.post(url(app, "/api/chat"), json={"message": "Tell me about the moon."})
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        stopping = asyncio.create_task(app.stop())
        events = [json.loads(first.decode().removeprefix("data: "))]
        async for raw in response.content:
            if raw.startswith(b"data: "):
                events.append(json.loads(raw.decode().removeprefix("data: ")))
        await stopping
    assert events[-1]["done"] is True
    assert events[-1]["text"] == "".join(e.get("delta", "") for e in events[:-1])


async def ask_as(
    http: aiohttp.ClientSession, app: Parley, key: str | None, message: str, conversation: str | None = None
) -> str:
    """Send ``message`` without streaming (as the API key ``key``); returns the conversation id."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body: dict[str, Any] = {"message": message, "stream": False}
    if conversation is not None:
        body["conversation_id"] = conversation
    async with http.post(url(app, "/api/chat"), json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["conversation_id"])


async def test_conversations_lists_only_the_callers_own(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"api_keys": ["alpha", "beta"]})) as app, aiohttp.ClientSession() as http:
        mine = await ask_as(http, app, "alpha", "alpha's question")
        theirs = await ask_as(http, app, "beta", "beta's question")
        listing = url(app, "/api/conversations")
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get(listing, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["type"] == "unauthorized"
        for key, expected, title in (("alpha", mine, "alpha's question"), ("beta", theirs, "beta's question")):
            async with http.get(listing, headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 200
                conversations = (await response.json())["conversations"]
            assert [c["conversation_id"] for c in conversations] == [expected]
            assert conversations[0]["title"] == title
            assert conversations[0]["turn_count"] == 2


async def test_conversations_are_newest_first_with_a_title_and_a_turn_count(make_settings: MakeSettings) -> None:
    async with make_app(make_settings()) as app, aiohttp.ClientSession() as http:
        first = await ask_as(http, app, None, "  The   first\n\nquestion  ")
        second = await ask_as(http, app, None, "x" * 200)
        await ask_as(http, app, None, "/ping")  # a command alone stores no turn: nothing to reopen
        await ask_as(http, app, None, "and a follow-up", first)  # the first becomes the newest
        async with http.get(url(app, "/api/conversations")) as response:
            assert response.status == 200
            conversations = (await response.json())["conversations"]
        assert [c["conversation_id"] for c in conversations] == [first, second]
        assert [c["title"] for c in conversations] == ["The first question", "x" * 79 + "…"]
        assert [c["turn_count"] for c in conversations] == [4, 2]
        assert conversations[0]["updated_at"] >= conversations[1]["updated_at"]

        async with http.get(url(app, "/api/conversations?limit=1")) as response:
            assert [c["conversation_id"] for c in (await response.json())["conversations"]] == [first]
        for bad in ("0", "201", "-1", "many"):
            async with http.get(url(app, f"/api/conversations?limit={bad}")) as response:
                assert response.status == 400
                assert (await response.json())["error"]["type"] == "invalid_request"


async def named_events(response: aiohttp.ClientResponse) -> list[tuple[str | None, dict[str, Any]]]:
    """Every SSE event of ``response`` as (its ``event:`` name or ``None``, its data)."""
    assert response.status == 200, await response.text()
    events: list[tuple[str | None, dict[str, Any]]] = []
    name: str | None = None
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
    return events


async def test_a_reply_that_waits_for_the_engine_streams_its_place_in_line_first(make_settings: MakeSettings) -> None:
    engine = ScriptedEngine(lambda _m: " ".join(f"w{i}" for i in range(10)), delay=0.05, places=1)
    settings = make_settings(engine={"max_tokens": 20}, queue_notice_after=0.1)
    async with make_app(settings, engine) as app, aiohttp.ClientSession() as http:

        async def ask(text: str) -> list[tuple[str | None, dict[str, Any]]]:
            async with http.post(url(app, "/api/chat"), json={"message": text}) as response:
                return await named_events(response)

        first = asyncio.create_task(ask("first"))
        await asyncio.sleep(0.1)
        others = [asyncio.create_task(ask(f"then {i}")) for i in range(2)]
        results = [await first, *await asyncio.gather(*others)]

    assert not [event for name, event in results[0] if name == "queue"], "the first never waited"
    for events in results[1:]:
        queue = [event for name, event in events if name == "queue"]
        assert queue, events
        assert [e["position"] for e in queue] == sorted((e["position"] for e in queue), reverse=True)
        assert all(set(e) == {"conversation_id", "position", "eta_seconds"} for e in queue)
        assert all(e["conversation_id"] == events[-1][1]["conversation_id"] for e in queue)
        first_text = next(i for i, (name, event) in enumerate(events) if "delta" in event)
        assert all(name == "queue" for name, _ in events[:first_text]), "every queue event comes before the text"
        assert all(name is None for name, _ in events[first_text:])
        assert events[-1][1]["text"] == " ".join(f"w{i}" for i in range(10))
    positions = {e["position"] for events in results[1:] for name, e in events if name == "queue"}
    assert positions >= {1, 2}


async def test_a_wait_that_runs_out_after_its_queue_events_ends_the_stream_with_an_error(
    make_settings: MakeSettings,
) -> None:
    """Once the stream has told the client its place, a queue timeout is its last event."""
    engine = ScriptedEngine(long_story, delay=0.05, places=1, queue_timeout=0.6)
    settings = make_settings(engine={"max_tokens": 40}, queue_notice_after=0.1)
    async with make_app(settings, engine) as app, aiohttp.ClientSession() as http:
        first = asyncio.create_task(http.post(url(app, "/api/chat"), json={"message": "a long story"}))
        await asyncio.sleep(0.2)
        async with http.post(url(app, "/api/chat"), json={"message": "and me?"}) as response:
            assert response.status == 200
            events = await named_events(response)
        (await first).close()
    assert events[0][0] == "queue"
    assert events[-1][1]["error"]["type"] == "EngineBusy"
    assert events[-1][1]["done"] is True
