"""Rendering the strategy report's sections: Markdown beside PNG files, and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any


def render_markdown(sections: list[dict[str, Any]], base: Path, title: str) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec['title']}", ""]
        for p in sec.get("paragraphs", []):
            lines += [p, ""]
        for header, body in sec.get("tables", []):
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in body]
            lines.append("")
        for img in sec.get("images", []):
            lines += [f"![{img.stem}]({img.relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in an escaped HTML string."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.5}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{padding:.35em .7em;border-bottom:1px solid #e5e5e5}
th{background:#f5f5f7;text-align:left}td{text-align:right}td:first-child{text-align:left}
code{background:#f0f0f3;padding:0 .25em;border-radius:3px}img{max-width:100%;margin:.5em 1em .5em 0}
.rec p:first-child{font-size:1.1em}
"""


def render_html(sections: list[dict[str, Any]], title: str) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for sec in sections:
        cls = " class='rec'" if sec["title"] == "Recommendation" else ""
        parts.append(f"<section{cls}><h2>{html.escape(sec['title'])}</h2>")
        parts += [f"<p>{_inline(p)}</p>" for p in sec.get("paragraphs", [])]
        for header, body in sec.get("tables", []):
            parts.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead>")
            parts.append(
                "<tbody>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
                + "</tbody></table>"
            )
        for img in sec.get("images", []):
            data = base64.b64encode(img.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(img.stem)}' src='data:image/png;base64,{data}'>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
