"""Markdown (what the model writes) to Slack mrkdwn (what ``chat.postMessage`` shows).

Contract: :func:`to_mrkdwn` never raises and never drops text. Bold becomes ``*x*``, italics
``_x_``, strikethrough ``~x~``, links ``<url|label>``, headings a bold line, lists ``•``/``1.``
lines, quotes ``>`` lines, and code keeps its backticks (Slack ignores a fence's language, so it
is dropped). ``&``, ``<`` and ``>`` are escaped everywhere, code included, because Slack parses
``<...>`` as control sequences even inside code; only a quote's leading ``>`` stays literal. If
the parser or renderer fails on some input, the text is sent escaped but otherwise as written.

Streaming sends half-written Markdown (``**bol``); CommonMark renders an unclosed marker as the
literal characters, so partial text never disappears while it grows.
"""

from __future__ import annotations

import logging

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

log = logging.getLogger(__name__)

_md = MarkdownIt("commonmark").enable("strikethrough")

HR = "───────"
_INDENT = "    "


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Undo Slack's escaping of incoming message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def to_mrkdwn(markdown: str) -> str:
    """Render ``markdown`` as Slack mrkdwn; falls back to the escaped text on any failure."""
    try:
        rendered = _blocks(SyntaxTreeNode(_md.parse(markdown)).children)
    except Exception:  # the text must reach the user even if a formatting edge case breaks
        log.warning("mrkdwn conversion failed; sending the text unformatted", exc_info=True)
        return escape(markdown)
    if markdown.strip() and not rendered.strip():
        return escape(markdown)  # e.g. only link reference definitions: show what was written
    return rendered


def _blocks(nodes: list[SyntaxTreeNode], separator: str = "\n\n") -> str:
    return separator.join(part for part in (_block(node) for node in nodes) if part)


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inlines(node.children)
    if kind == "heading":
        inner = _inlines(node.children).strip()
        return f"*{inner}*" if inner else ""
    if kind in ("fence", "code_block"):
        body = node.content if node.content.endswith("\n") or not node.content else node.content + "\n"
        return f"```\n{escape(body)}```"
    if kind == "bullet_list":
        return "\n".join(_item(item, "• ") for item in node.children)
    if kind == "ordered_list":
        start = int(str(node.attrs.get("start", 1)))
        return "\n".join(_item(item, f"{start + index}. ") for index, item in enumerate(node.children))
    if kind == "blockquote":
        inner = _blocks(node.children)
        # A literal ">" opening a line is Slack's quote marker, the one place it stays unescaped.
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind == "hr":
        return HR
    if kind in ("html_block", "text"):
        return escape(node.content.rstrip("\n"))
    if node.children:
        return _blocks(node.children)
    return escape(node.content)


def _item(item: SyntaxTreeNode, bullet: str) -> str:
    inner = _blocks(item.children, "\n")
    first, *rest = inner.split("\n") if inner else [""]
    lines = [bullet + first] + [(_INDENT + line) if line else line for line in rest]
    return "\n".join(lines)


def _inlines(nodes: list[SyntaxTreeNode]) -> str:
    return "".join(_inline(node) for node in nodes)


def _wrap(marker: str, inner: str) -> str:
    # Slack only formats markers that hug the text: "* x *" shows literally, so keep the spaces outside.
    stripped = inner.strip()
    if not stripped:
        return inner
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{marker}{stripped}{marker}{trail}"


def _inline(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "inline":
        return _inlines(node.children)
    if kind in ("text", "html_inline"):
        return escape(node.content)
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "strong":
        return _wrap("*", _inlines(node.children))
    if kind == "em":
        return _wrap("_", _inlines(node.children))
    if kind == "s":
        return _wrap("~", _inlines(node.children))
    if kind == "code_inline":
        return f"`{escape(node.content)}`"
    if kind == "link":
        return _link(str(node.attrs.get("href", "")), _inlines(node.children))
    if kind == "image":
        alt = escape(node.content) or "image"
        return _link(str(node.attrs.get("src", "")), alt)
    if node.children:
        return _inlines(node.children)
    return escape(node.content)


def _link(url: str, label: str) -> str:
    if not url:
        return label
    target = escape(url).replace("|", "%7C")
    if not label or label in (target, escape(url)) or label.removeprefix("mailto:") == target.removeprefix("mailto:"):
        return f"<{target}>"
    # A "|" in the label would end Slack's link syntax early.
    return f"<{target}|{label.replace('|', '¦')}>"
