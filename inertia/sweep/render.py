"""Markdown and self-contained HTML from one list of blocks (headings, paragraphs, tables, figures).

The sweep report (`report`) builds the blocks once and both renderings say the same thing: the
Markdown links each image by its file name (written beside it), the HTML embeds the same PNG bytes
as base64, so it is one file with no outside references.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Image:
    png: bytes
    name: str  # file name under the report directory
    alt: str


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    note: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]  # str or Image
    numeric: set[int] = field(default_factory=set)  # right-aligned columns


@dataclass
class Figure:
    image: Image
    caption: str


#: What a report is made of, in reading order.
Block = Heading | Para | Table | Figure


def md_text(text: str) -> str:
    """Text for Markdown that a renderer shows as text: HTML-escaped (a label `<script>` or `<img onerror=...>`
    stays text), no inline link or image (`](` is broken up), on one line. `code` spans stay."""
    return html.escape(str(text), quote=False).replace("](", "]\\(").replace("\r", " ").replace("\n", " ")


def _md_cell(value: Any) -> str:
    if isinstance(value, Image):
        return f"![{md_text(value.alt)}]({value.name})"
    return md_text(value).replace("|", "\\|")


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + md_text(block.text), ""]
        elif isinstance(block, Para):
            lines += [("> " if block.note else "") + md_text(block.text), ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("| " + " | ".join("---:" if i in block.numeric else "---" for i in range(len(block.headers))) + " |")
            for row in block.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            lines.append("")
        elif isinstance(block, Figure):
            lines += [f"![{md_text(block.image.alt)}]({block.image.name})", "", f"*{md_text(block.caption)}*", ""]
    return "\n".join(lines)


def _data_uri(image: Image) -> str:
    return "data:image/png;base64," + base64.b64encode(image.png).decode("ascii")


def _html_inline(text: str) -> str:
    """Escape, then render `code` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _html_cell(value: Any) -> str:
    if isinstance(value, Image):
        return f'<img src="{_data_uri(value)}" alt="{html.escape(value.alt)}">'
    return _html_inline(str(value))


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1500px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; vertical-align: middle; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 10px 0 22px; } figure img { max-width: 100%; } figcaption { font-size: 13px; color: #555; }
td img { display: block; image-rendering: pixelated; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def render_html(blocks: list[Block], title: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            opening = '<p class="note">' if block.note else "<p>"
            parts.append(f"{opening}{_html_inline(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.headers) + "</tr></thead><tbody>")
            for row in block.rows:
                cells = "".join(('<td class="num">' if i in block.numeric else "<td>") + _html_cell(c) + "</td>"
                                for i, c in enumerate(row))
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table>")
        elif isinstance(block, Figure):
            parts.append(f'<figure><img src="{_data_uri(block.image)}" alt="{html.escape(block.image.alt)}">'
                         f"<figcaption>{_html_inline(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
