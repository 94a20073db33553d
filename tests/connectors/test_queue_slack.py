"""The visible queue on Slack: eight mentions, each in its own channel and so streamed in its own
thread, waiting on one engine, through slack-bolt/slack_sdk and the fake Slack (about one chat
write a second per channel; stream methods as documented).

A chat stream only appends, so a notice could not be taken back out of one: a reply that has to
wait in line ends its stream and is written by ``chat.update`` edits instead, notice first.
"""

from __future__ import annotations

import itertools

from tests.conftest import MakeSettings
from tests.connectors.test_slack import socket_settings
from tests.fakes.slack import FakeSlack
from tests.support import ScriptedEngine, make_app, queue_position, wait_idle, wait_until

ANSWER = " ".join(f"word{i}" for i in range(12))


async def test_eight_waiting_slack_users_see_their_place_only_go_down(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    settings = make_settings(
        slack=socket_settings(slack),
        web={"enabled": False},
        engine={"max_tokens": 40},
        queue_notice_after=0.5,
    )
    # Each reply holds the one place about 1.8 s: ending a stream and then editing in the notice
    # takes two paced writes (about 1 s apart), so a shorter wait would end before it shows.
    engine = ScriptedEngine(lambda _m: ANSWER, delay=0.15, places=1)
    channels = [f"C{n}" for n in range(1, 9)]
    async with make_app(settings, engine) as app:
        for n, channel in enumerate(channels):
            ts = f"1700000{n}00.000100"
            event = {"type": "app_mention", "channel": channel, "user": f"U{n + 2}", "text": "<@UBOT> hi", "ts": ts}
            await slack.send_event(event)
        await wait_until(
            lambda: all([p.text for p in slack.posted(channel, any_thread=True)] == [ANSWER] for channel in channels),
            timeout=120,
            what="every answer shown",
        )
        await wait_idle(app)

    assert slack.rejected == [], [(c.method, c.error) for c in slack.rejected]
    waited, seen = 0, []
    for channel in channels:
        calls = slack.chat_calls(channel)
        shown = [c.params.get("text") or c.params.get("markdown_text") or "" for c in calls]
        positions = [p for p in map(queue_position, shown) if p is not None]
        assert positions == sorted(positions, reverse=True), shown
        waited += bool(positions)
        seen.append(positions)
        writes = [c.at for c in calls if c.method != "chat.appendStream"]
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(writes)), writes
        if positions:  # it waited: its stream was ended and the notice and reply came by edits
            assert "chat.update" in [c.method for c in calls]
    assert waited >= 6, seen  # the first ones may start before the notice is due
    assert max(len(p) for p in seen) >= 2, seen  # the line moved, and it was shown
