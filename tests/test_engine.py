"""The engine contract's shared rule (bot/engine.py): trimming history to the context window."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest

from bot.engine import TRIM_STEP, ChatMessage, Role, Trimmed, trim_history

PER_MESSAGE = 3
OPENING = 2


def msg(role: Role, size: int, tag: str = "") -> ChatMessage:
    return ChatMessage(role, (tag or role[0]) * size)


def true_count(messages: Sequence[ChatMessage]) -> int:
    """A template of 3 tokens a message plus 2 for the reply's opening; one token a character."""
    return sum(len(m.content) + PER_MESSAGE for m in messages) + OPENING


class Counts:
    """The engine's counters, recording what they were asked."""

    def __init__(self, *, extra: int = 0) -> None:
        self.prompts: list[list[ChatMessage]] = []
        self.texts: list[str] = []
        self.extra = extra
        """Tokens the whole count finds beyond the per-message estimate (a denser template)."""

    async def count(self, messages: list[ChatMessage]) -> int:
        self.prompts.append(list(messages))
        return true_count(messages) + self.extra * len(messages)

    async def text(self, text: str) -> int:
        self.texts.append(text)
        return len(text)


async def trim(
    messages: Sequence[ChatMessage],
    budget: int,
    counts: Counts,
    per_message: float | None = PER_MESSAGE,
    step: float = TRIM_STEP,
) -> Trimmed[int]:
    return await trim_history(
        messages,
        budget,
        count=counts.count,
        size=lambda n: n,
        text_tokens=counts.text,
        per_message=per_message,
        step=step,
    )


def chat(turns: int) -> list[ChatMessage]:
    messages = [msg("system", 20)]
    for i in range(turns):
        messages += [msg("user", 30, str(i)), msg("assistant", 30, chr(ord("a") + i))]
    return [*messages, msg("user", 10, "Q")]


async def test_a_prompt_that_fits_is_kept_whole_and_counted_once() -> None:
    counts = Counts()
    messages = chat(3)
    trimmed = await trim(messages, true_count(messages), counts)
    assert trimmed == Trimmed(messages, 0, true_count(messages), true_count(messages), fits=True)
    assert counts.prompts == [messages]
    assert counts.texts == []


@pytest.mark.parametrize("per_message", [PER_MESSAGE, None])
async def test_without_steps_the_oldest_turns_go_first_and_no_more_than_must(per_message: float | None) -> None:
    counts = Counts()
    messages = chat(6)
    budget = true_count(messages) - 50
    trimmed = await trim(messages, budget, counts, per_message, step=0)
    assert trimmed.fits
    assert trimmed.messages[0] == messages[0]  # the system prompt stays
    assert trimmed.messages[1].role == "user"  # whole exchanges: never an assistant turn first
    assert trimmed.messages[-1] == messages[-1]
    assert trimmed.messages == [messages[0], *messages[1 + trimmed.dropped :]]
    assert trimmed.tokens == true_count(trimmed.messages) <= budget
    assert trimmed.prompt == trimmed.tokens
    one_more = [messages[0], *messages[1 + trimmed.dropped - 2 :]]
    assert true_count(one_more) > budget
    assert trimmed.dropped == 2


async def test_a_cut_on_an_assistant_turn_moves_on_to_the_next_user_turn() -> None:
    counts = Counts()
    messages = chat(4)
    # Room for the system prompt, the last answer and the question, not for the question before.
    budget = true_count([messages[0], *messages[-3:]]) - 1
    trimmed = await trim(messages, budget, counts)
    assert trimmed.messages == [messages[0], messages[-1]]  # the lone answer goes too
    assert trimmed.dropped == len(messages) - 2


async def test_with_a_known_template_share_only_the_dropped_texts_are_counted() -> None:
    counts = Counts()
    messages = chat(20)
    trimmed = await trim(messages, true_count([messages[0], *messages[-3:]]), counts)
    # The walk goes oldest first and stops at the cut: the kept texts are counted only in the whole.
    assert counts.texts == [m.content for m in messages[1 : 1 + len(counts.texts)]]
    assert len(counts.texts) <= trimmed.dropped


async def test_without_a_known_share_every_text_is_counted_and_the_share_learned_from_the_count() -> None:
    counts = Counts(extra=5)  # 8 template tokens a message, not 3: the learned share must see that
    messages = chat(6)
    budget = true_count(messages) + 5 * len(messages) - 80
    trimmed = await trim(messages, budget, counts, per_message=None)
    assert len(counts.texts) == len(messages) - 1
    assert trimmed.fits
    assert len(counts.prompts) == 3  # the whole prompt, the system prompt alone, and the kept prompt


async def test_an_estimate_that_misses_is_corrected_by_the_whole_count() -> None:
    counts = Counts()
    messages = chat(6)  # every message costs 33 tokens; the share of 8 over-estimates it as 38
    budget = true_count(messages) - 70  # the estimate drops 2 messages (76 tokens), truly only 66
    trimmed = await trim(messages, budget, counts, per_message=PER_MESSAGE + 5, step=0)
    assert trimmed.fits
    assert trimmed.tokens == true_count(trimmed.messages) <= budget
    assert trimmed.messages == [messages[0], *messages[5:]]  # one more dropped, then on to a user turn
    assert len(counts.prompts) == 3  # the whole, the estimated cut, the kept prompt


async def test_a_newest_message_too_long_alone_does_not_fit_and_says_by_how_much() -> None:
    counts = Counts()
    messages = [*chat(2), msg("user", 500)]
    trimmed = await trim(messages, 100, counts)
    assert not trimmed.fits
    assert trimmed.messages == [messages[0], messages[-1]]
    assert trimmed.tokens == true_count([messages[0], messages[-1]])


async def test_without_a_system_prompt_the_newest_turns_are_kept() -> None:
    counts = Counts()
    messages = chat(5)[1:]
    budget = true_count(messages[-3:])
    trimmed = await trim(messages, budget, counts, step=0)
    assert trimmed.messages == messages[-3:]
    assert trimmed.dropped == len(messages) - 3
    assert [] not in counts.prompts  # no empty prompt is counted for a missing system prompt


async def test_the_prompt_is_the_engines_own_result_for_the_kept_messages() -> None:
    async def tokens(messages: list[ChatMessage]) -> list[int]:
        return [0] * true_count(messages)

    async def text(value: str) -> int:
        return len(value)

    messages = chat(6)
    budget = true_count(messages) - 50
    trimmed = await trim_history(messages, budget, count=tokens, size=len, text_tokens=text, per_message=PER_MESSAGE)
    assert trimmed.prompt == [0] * true_count(trimmed.messages)
    assert trimmed.tokens == len(trimmed.prompt)


async def test_the_cut_moves_in_steps_so_the_kept_prefix_lasts_for_several_turns() -> None:
    """A conversation that outgrew its budget, one exchange at a time: each trimmed prompt fits,
    keeps at least the budget less a step and an exchange, and starts where the previous one did
    on most turns; cutting no more than must moves the start every turn."""
    budget = 600
    exchange = true_count([msg("user", 30), msg("assistant", 30)]) - OPENING
    starts: dict[float, list[int]] = {TRIM_STEP: [], 0: []}
    for turns in range(10, 40):
        messages = [msg("system", 20), *[msg("user", 30), msg("assistant", 30)] * turns, msg("user", 10)]
        for step, seen in starts.items():
            trimmed = await trim(messages, budget, Counts(), step=step)
            assert trimmed.fits
            assert trimmed.messages[1].role == "user"
            assert trimmed.tokens > budget - budget * step - exchange
            seen.append(trimmed.dropped)
    moves = {step: sum(a != b for a, b in itertools.pairwise(seen)) for step, seen in starts.items()}
    assert moves[0] == len(starts[0]) - 1  # the start moved on every turn
    grown = exchange * (len(starts[TRIM_STEP]) - 1)
    assert moves[TRIM_STEP] <= grown // int(budget * TRIM_STEP) + 1
    assert starts[TRIM_STEP] == sorted(starts[TRIM_STEP])  # and only ever forward


async def test_a_template_cost_by_role_keeps_a_long_history_near_its_budget() -> None:
    """Where a role's name costs more tokens (ChatML's ``assistant`` is two), a constant estimate
    falls short on every dropped message and a long history keeps far less than its budget; the
    cost by role keeps it within a step."""
    cost = {"system": 3, "user": 3, "assistant": 4}

    async def count(messages: list[ChatMessage]) -> int:
        return sum(len(m.content) + cost[m.role] for m in messages) + OPENING

    async def text(content: str) -> int:
        return len(content)

    messages = [msg("system", 20), *[msg("user", 10), msg("assistant", 10)] * 600, msg("user", 10)]
    budget = 600
    kept = {}
    estimates: dict[str, float | Callable[[ChatMessage], float]] = {"by role": lambda m: cost[m.role], "constant": 3.0}
    for name, per_message in estimates.items():
        trimmed = await trim_history(
            messages, budget, count=count, size=lambda n: n, text_tokens=text, per_message=per_message
        )
        assert trimmed.fits
        kept[name] = trimmed.tokens
    exchange = 10 + 3 + 10 + 4
    assert kept["by role"] > budget - budget * TRIM_STEP - exchange
    assert kept["constant"] < budget - budget * TRIM_STEP - exchange  # what the estimate missed
