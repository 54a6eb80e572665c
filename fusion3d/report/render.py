"""Rendering a :class:`Document`: one self-contained HTML page (inline CSS, every figure embedded as
a base64 PNG data URI, no script, no external asset) and Markdown that refers to the PNG files by
relative path; ``write`` puts both into a directory."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from urllib.parse import quote

from fusion3d.report.document import Code, Document, Figures, Img, Items, Links, Missing, Para, Table
from fusion3d.run.layout import FILES, RunDir
from fusion3d.utils import atomic_write_text

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:12px 24px 40px;background:#fff}
h1{font-size:1.5em;margin:.4em 0 .2em}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.meta{color:#555;font-size:.85em;margin:0 0 .6em;padding-left:1.2em}
.headline{font-size:1.02em;background:#f3f7fc;border-left:4px solid #4C72B0;padding:8px 12px;margin:.6em 0}
.missing{background:#fff6e5;border-left:4px solid #e0a030;padding:6px 10px}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}th{background:#f0f0f0;text-align:left}
td.num{text-align:right;white-space:nowrap}
caption{caption-side:bottom;text-align:left;color:#555;font-size:.92em;
padding-top:3px}
code{background:#f2f2f2;padding:0 3px;border-radius:3px;font-size:.92em}pre{background:#f6f6f6;padding:8px;
overflow:auto;font-size:.8em}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
.row figure img{max-height:440px;width:auto}
figcaption{color:#555;font-size:.85em}
.row{display:flex;gap:12px;align-items:flex-start}.row figure{flex:1 1 0;min-width:0}
nav{font-size:.85em;color:#555}nav a{margin-right:10px}
.story{font-size:1.02em;line-height:1.45}
"""

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")
_NUMERIC = re.compile(r"^[\s\-+–]*[\d.,]+\s*(%|[kMG]|[kMG]?s)?(\s*±\s*[\d.]+%?)?$|^–$")


# ----------------------------------------------------------------------------- HTML


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f"<strong>{_inline_html(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_figure(img: Img, title: str = "") -> str:
    cap = " ".join(
        x
        for x in (
            f"<strong>{html.escape(title)}</strong>" if title else "",
            _inline_html(img.caption) if img.caption else "",
        )
        if x
    )
    return (
        f'<figure><img src="{_data_uri(img.path)}" alt="{html.escape(img.alt)}">'
        + (f"<figcaption>{cap}</figcaption>" if cap else "")
        + "</figure>"
    )


def _html_table(b: Table) -> str:
    head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_inline_html(c)}</td>'
            if _NUMERIC.match(c or "–")
            else f"<td>{_inline_html(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in b.rows
    )
    cap = f"<caption>{_inline_html(b.caption)}</caption>" if b.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_block(b) -> str:
    if isinstance(b, Para):
        cls = f' class="{b.cls}"' if b.cls else ""
        return f"<p{cls}>{_inline_html(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Img):
        return _html_figure(b)
    if isinstance(b, Figures):
        titles = b.titles + [""] * (len(b.images) - len(b.titles))
        return '<div class="row">' + "".join(_html_figure(i, t) for i, t in zip(b.images, titles)) + "</div>"
    if isinstance(b, Code):
        return (
            f"<details><summary>{_inline_html(b.summary)}</summary>"
            f"<pre><code>{html.escape(b.text)}</code></pre>"
            "</details>"
        )
    if isinstance(b, Missing):
        cmd = f" Run: <code>{html.escape(b.command)}</code>" if b.command else ""
        return f'<p class="missing"><strong>Not run yet:</strong> {_inline_html(b.text)}{cmd}</p>'
    if isinstance(b, Links):
        return (
            "<ul>"
            + "".join(
                f'<li><a href="{html.escape(h, quote=True)}">{_inline_html(t)}</a></li>'
                for t, h, _ in b.items
            )
            + "</ul>"
        )
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(doc: Document) -> str:
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in doc.sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    if doc.meta:
        parts.append('<ul class="meta">' + "".join(f"<li>{_inline_html(m)}</li>" for m in doc.meta) + "</ul>")
    parts.append(f"<nav>{nav}</nav>")
    for s in doc.sections:
        parts.append(f'<section id="{html.escape(s.id)}">')
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts.extend(_html_block(b) for b in s.blocks)
        parts.append("</section>")
    parts.append(
        '<footer><p class="meta">Written by <code>fusion3d report</code>. Every figure is embedded in this '
        f"page; the same report in Markdown is {FILES['report_md']}, next to this file.</p></footer>"
    )
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- Markdown


def _md_rel(path: Path, base: Path) -> str:
    return quote(os.path.relpath(Path(path).resolve(), base.resolve()).replace(os.sep, "/"), safe="/")


_CODE_SPAN = re.compile(r"(`[^`]+`)")


def _md_text(text) -> str:
    """Text from data made inert in Markdown: ``<`` and ``>`` outside code spans become entities, so
    a name such as ``<img src=x onerror=...>`` is shown, never rendered as HTML."""
    parts = _CODE_SPAN.split(str(text))
    return "".join(
        p if i % 2 else p.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        for i, p in enumerate(parts)
    )


def _md_cell(c: str) -> str:
    return _md_text(str(c).replace("\n", " ")).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _md_block(b, base: Path) -> list[str]:
    if isinstance(b, Para):
        return [("> " if b.cls == "headline" else "") + _md_text(b.text)]
    if isinstance(b, Items):
        return [f"- {_md_text(i)}" for i in b.items]
    if isinstance(b, Table):
        return _md_table(b.header, b.rows) + ([""] + [f"*{_md_text(b.caption)}*"] if b.caption else [])
    if isinstance(b, Img):
        alt, cap = _md_text(b.alt), _md_text(b.caption)
        return [f"![{alt}]({_md_rel(b.path, base)})"] + ([""] + [f"*{cap}*"] if b.caption else [])
    if isinstance(b, Figures):
        titles = b.titles + [i.alt for i in b.images[len(b.titles) :]]
        out = _md_table(titles, [[f"![{i.alt}]({_md_rel(i.path, base)})" for i in b.images]])
        caps = [_md_text(i.caption) for i in b.images if i.caption]
        return out + ([""] + [f"*{c}*" for c in caps] if caps else [])
    if isinstance(b, Code):
        fence = "````" if "```" in b.text else "```"
        return [
            f"<details><summary>{html.escape(b.summary.replace('`', ''))}</summary>",
            "",
            f"{fence}{b.lang}",
            b.text,
            fence,
            "",
            "</details>",
        ]
    if isinstance(b, Missing):
        return [f"**Not run yet:** {_md_text(b.text)}" + (f" Run: `{b.command}`" if b.command else "")]
    if isinstance(b, Links):
        return [f"- [{_md_text(t)}]({quote(m, safe='/#')})" for t, _, m in b.items]
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(doc: Document, base: Path) -> str:
    lines = [f"# {_md_text(doc.title)}", ""]
    lines += [f"- {_md_text(m)}" for m in doc.meta] + ([""] if doc.meta else [])
    for s in doc.sections:
        lines += [f"## {_md_text(s.title)}", ""]
        for b in s.blocks:
            lines += _md_block(b, base) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write(doc: Document, out_dir: Path) -> tuple[Path, Path]:
    """Write ``doc`` as the report page and its Markdown into ``out_dir``; returns both paths."""
    out = RunDir(out_dir)
    html_path, md_path = out.report_html, out.report_md
    atomic_write_text(html_path, render_html(doc))
    atomic_write_text(md_path, render_markdown(doc, out_dir))
    for p in (html_path, md_path):  # a report is meant to be shared: rw-r--r--, not the temporary file's 0600
        os.chmod(p, 0o644)
    return html_path, md_path
