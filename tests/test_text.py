"""Text helpers the connectors share."""

from __future__ import annotations

import re

import pytest

from bot.text import ELLIPSIS, cut_spans, one_line, squeeze_spaces, strip_mentions, truncate


def test_strip_mentions_removes_every_mention_and_tidies_spaces() -> None:
    discord = re.compile(r"<@!?42>")
    assert strip_mentions("<@42> hi  <@!42>there", discord) == "hi there"
    assert strip_mentions("ask <@43> too", discord) == "ask <@43> too"  # someone else
    assert strip_mentions("line one <@42>\nline two", discord) == "line one \nline two"
    assert strip_mentions("<@42>", discord) == ""


def test_cut_spans_removes_marked_ranges_in_any_order() -> None:
    text = "@bot what is @bot up to"
    assert cut_spans(text, [(13, 17), (0, 4)]) == "what is up to"
    assert cut_spans(text, []) == text


def test_squeeze_spaces_keeps_newlines() -> None:
    assert squeeze_spaces("  a \t  b\n\nc  ") == "a b\n\nc"


def test_truncate_cuts_with_an_ellipsis_within_the_limit() -> None:
    assert truncate("short", 5) == "short"
    cut = truncate("a" * 101, 100)
    assert len(cut) == 100
    assert cut == "a" * 99 + ELLIPSIS
    with pytest.raises(ValueError, match="limit"):
        truncate("x", 0)


def test_one_line_collapses_whitespace_and_falls_back_when_blank() -> None:
    assert one_line("Ask the model\n  something", 100) == "Ask the model something"
    assert one_line(" \n ", 100, fallback="ask") == "ask"
    assert one_line("word " * 30, 20) == "word word word word" + ELLIPSIS
