from bot.splitting import cut, open_fence


def test_open_fence_tracks_language_and_closing() -> None:
    assert open_fence("text\n```python\nx = 1\n") is not None
    assert open_fence("text\n```python\nx = 1\n```\n") is None
    fence = open_fence("a\n```js\nlet x\n")
    assert fence is not None
    assert fence.line == "```js"


def test_cut_prefers_paragraph_then_line_then_space() -> None:
    text = "first paragraph here.\n\nsecond paragraph that is long " + "x" * 40
    piece = cut("", text, 40)
    assert piece.head == "first paragraph here."
    assert text[piece.consumed :].startswith("second")
    piece = cut("", "one two three four five six seven", 20)
    assert len(piece.head) <= 20
    assert piece.head == "one two three"


def test_cut_hard_when_no_whitespace() -> None:
    piece = cut("", "x" * 100, 30)
    assert len(piece.head) <= 30
    assert piece.consumed == len(piece.head)


def test_cut_moves_before_a_code_block_when_there_is_room() -> None:
    text = "Intro text that is long enough to keep.\n```python\n" + "print(1)\n" * 20 + "```\n"
    piece = cut("", text, 80)
    assert "```" not in piece.head
    assert text[piece.consumed :].startswith("```python")


def test_cut_inside_a_long_code_block_closes_and_reopens_it() -> None:
    text = "```python\n" + "".join(f"line_{i} = {i}\n" for i in range(40)) + "```\n"
    piece = cut("", text, 100)
    assert len(piece.head) <= 100
    assert piece.head.startswith("```python")
    assert piece.head.endswith("\n```")
    assert open_fence(piece.head) is None
    assert piece.next_prefix == "```python\n"
