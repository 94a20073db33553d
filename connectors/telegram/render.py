"""Markdown (what the model writes) to the HTML subset Telegram renders.

:func:`to_html` never raises and accepts half-written Markdown (a reply still streaming): an
unclosed ``**`` stays literal text, an unclosed code fence runs to the end. The result uses only
tags Telegram's HTML parse mode knows (``b i s code pre a blockquote``), escapes ``< > &`` in all
text, and never nests ``code``/``pre`` or blockquotes, which Telegram refuses. Lists become
bullet or numbered lines and headings become bold lines, since Telegram has neither.

:func:`visible_length` is how long Telegram counts the message after entity parsing (UTF-16 code
units), so the connector can fall back to the plain Markdown when the rendering would not fit.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_MD = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")
_SAFE_LINK = re.compile(r"^(https?|tg|mailto):", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_LANGUAGE = re.compile(r"^[\w+#.-]{1,32}$")
HR = "———"


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def to_html(markdown: str) -> str:
    """Render ``markdown`` as Telegram HTML."""
    root = SyntaxTreeNode(_MD.parse(markdown))
    return _Renderer().blocks(root.children, tight=False).strip()


def visible_length(rendered: str) -> int:
    """Length of ``rendered`` HTML as Telegram counts it: text only, in UTF-16 code units."""
    text = html.unescape(_TAG.sub("", rendered))
    return len(text.encode("utf-16-le")) // 2


class _Renderer:
    def __init__(self) -> None:
        self._quote_depth = 0

    def blocks(self, nodes: list[SyntaxTreeNode], *, tight: bool) -> str:
        parts = [self.block(node) for node in nodes]
        return ("\n" if tight else "\n\n").join(part for part in parts if part)

    def block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "paragraph":
            return self.inline(node.children)
        if kind == "heading":
            return f"<b>{self.inline(node.children)}</b>"
        if kind in ("bullet_list", "ordered_list"):
            return self.bullets(node)
        if kind == "blockquote":
            return self.quote(node)
        if kind in ("fence", "code_block"):
            return self.code(node)
        if kind == "hr":
            return HR
        if kind == "inline":
            return self.inline(node.children)
        # html_block and anything unknown: show the source as text.
        return _escape(node.content.rstrip("\n"))

    def bullets(self, node: SyntaxTreeNode) -> str:
        tight = all(
            child.type != "paragraph" or bool(child.hidden) for item in node.children for child in item.children
        )
        ordered = node.type == "ordered_list"
        number = int(str(node.attrs.get("start", 1))) if ordered else 0
        lines = []
        for item in node.children:
            marker = f"{number}." if ordered else "•"
            number += 1
            body = self.blocks(item.children, tight=tight)
            indent = " " * (len(marker) + 1)
            body = body.replace("\n", "\n" + indent) if "<pre>" not in body else body
            lines.append(f"{marker} {body}".rstrip())
        return ("\n" if tight else "\n\n").join(lines)

    def quote(self, node: SyntaxTreeNode) -> str:
        self._quote_depth += 1
        try:
            body = self.blocks(node.children, tight=False)
        finally:
            self._quote_depth -= 1
        if self._quote_depth > 0 or not body:
            return body  # Telegram refuses nested blockquotes
        return f"<blockquote>{body}</blockquote>"

    def code(self, node: SyntaxTreeNode) -> str:
        content = _escape(node.content.rstrip("\n"))
        if not content:
            content = " "
        language = node.info.strip().split(" ")[0] if node.type == "fence" else ""
        if language and _LANGUAGE.match(language):
            return f'<pre><code class="language-{_escape(language)}">{content}</code></pre>'
        return f"<pre>{content}</pre>"

    def inline(self, nodes: list[SyntaxTreeNode]) -> str:
        out: list[str] = []
        for node in nodes:
            kind = node.type
            if kind == "text":
                out.append(_escape(node.content))
            elif kind in ("softbreak", "hardbreak"):
                out.append("\n")
            elif kind == "code_inline":
                out.append(f"<code>{_escape(node.content)}</code>")
            elif kind in ("strong", "em", "s"):
                tag = {"strong": "b", "em": "i", "s": "s"}[kind]
                out.append(f"<{tag}>{self.inline(node.children)}</{tag}>")
            elif kind == "link":
                out.append(self.link(node))
            elif kind == "image":
                out.append(_escape(str(node.attrs.get("alt", "")) or self._plain(node.children)))
            elif kind == "inline":
                out.append(self.inline(node.children))
            else:
                out.append(_escape(node.content))
        return "".join(out)

    def link(self, node: SyntaxTreeNode) -> str:
        label = self.inline(node.children)
        href = str(node.attrs.get("href", ""))
        if not _SAFE_LINK.match(href) or not label.strip():
            return label or _escape(href)
        return f'<a href="{html.escape(href, quote=True)}">{label}</a>'

    def _plain(self, nodes: list[SyntaxTreeNode]) -> str:
        return "".join(node.content if node.type == "text" else self._plain(node.children) for node in nodes)
