"""One self-contained HTML page per analysis: inline CSS, images as base64 PNG data URIs, no script,
no external resource. Links point to files of the analysis by relative paths, checked when the page
is written (a link to a missing file is rendered as plain text, never as a dead link).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:0.2em 0}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
h3{font-size:1.0em;margin:1.1em 0 0.4em}
.sub{color:#666;font-size:0.9em}
.verdict{padding:10px 14px;border-radius:6px;margin:10px 0;font-size:1.05em}
.good{background:#e6f4ea;border:1px solid #9ccfa8}.warn{background:#fff4e0;border:1px solid #f0c36d}.bad{background:#fde8e8;border:1px solid #e89a9a}.info{background:#eef3fb;border:1px solid #a9c1e8}
.scroll{overflow-x:auto;max-width:100%;margin:6px 0 12px}.scroll table{margin:0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:0.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:6px 10px 10px 0;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:0.8em;color:#555;max-width:520px}
.notes li{color:#7a4b00}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


class Link:
    """A cell value that links to a file relative to the report."""

    def __init__(self, href: str, text: str | None = None):
        self.href = href
        self.text = text or Path(href).name


class Report:
    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._parts: list[tuple[str, Any]] = []

    # -- content ---------------------------------------------------------------------------------
    def section(self, title: str) -> None:
        self._parts.append(("raw", f"<h2>{html.escape(title)}</h2>"))

    def heading(self, title: str) -> None:
        self._parts.append(("raw", f"<h3>{html.escape(title)}</h3>"))

    def text(self, text: str) -> None:
        self._parts.append(("raw", f"<p>{html.escape(text)}</p>"))

    def callout(self, text: str, kind: str = "info", title: str | None = None) -> None:
        head = f"<b>{html.escape(title)}</b> " if title else ""
        self._parts.append(("raw", f'<div class="verdict {kind}">{head}{html.escape(text)}</div>'))

    def bullets(self, items: Sequence[str], css: str = "") -> None:
        if items:
            li = "".join(f"<li>{html.escape(i)}</li>" for i in items)
            self._parts.append(("raw", f'<ul class="{css}">{li}</ul>'))

    def image(self, png: bytes, caption: str = "", width: int | None = None) -> None:
        self._parts.append(("image", (png, caption, width)))

    def images(self, items: Sequence[tuple[bytes, str]]) -> None:
        for png, caption in items:
            self.image(png, caption)

    def kv(self, rows: dict[str, Any]) -> None:
        self.table([{"field": k, "value": v} for k, v in rows.items()], ["field", "value"], header=False)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, header: bool = True,
              labels: dict[str, str] | None = None) -> None:
        """A table of ``rows`` (dicts) in ``columns`` order; ``labels`` names the headers (default: the keys).
        Wide tables scroll sideways in their own box instead of widening the page."""
        self._parts.append(("table", (list(rows), list(columns) if columns else None, header, dict(labels or {}))))

    def link(self, href: str, text: str | None = None) -> None:
        self._parts.append(("link", Link(href, text)))

    # -- output ----------------------------------------------------------------------------------
    def _cell(self, v: Any, base: Path | None) -> str:
        if isinstance(v, Link):
            return self._link_html(v, base)
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, Link) for x in v):
            return " ".join(self._link_html(x, base) for x in v)
        cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        return f"<td{cls}>{html.escape(_fmt(v))}</td>" if cls else html.escape(_fmt(v))

    def _link_html(self, link: Link, base: Path | None) -> str:
        ok = base is None or (base / link.href).exists()
        if not ok:
            return html.escape(link.text)
        return f'<a href="{html.escape(link.href, quote=True)}">{html.escape(link.text)}</a>'

    def render(self, base: Path | None = None) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        if self.subtitle:
            out.append(f'<div class="sub">{html.escape(self.subtitle)}</div>')
        for kind, item in self._parts:
            if kind == "raw":
                out.append(item)
            elif kind == "image":
                png, caption, width = item
                data = base64.b64encode(png).decode("ascii")
                w = f' width="{int(width)}"' if width else ""
                alt = html.escape(caption or "figure", quote=True)
                cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"{w}>{cap}</figure>')
            elif kind == "link":
                out.append(f"<p>{self._link_html(item, base)}</p>")
            elif kind == "table":
                rows, columns, header, labels = item
                if not rows:
                    out.append("<p><i>(none)</i></p>")
                    continue
                columns = columns or list(dict.fromkeys(k for r in rows for k in r))
                t = ['<div class="scroll"><table>']
                if header:
                    t.append("<tr>" + "".join(f"<th>{html.escape(str(labels.get(c, c)))}</th>" for c in columns) + "</tr>")
                for r in rows:
                    cells = []
                    for c in columns:
                        cell = self._cell(r.get(c), base)
                        cells.append(cell if cell.startswith("<td") else f"<td>{cell}</td>")
                    t.append("<tr>" + "".join(cells) + "</tr>")
                t.append("</table></div>")
                out.append("".join(t))
        out.append('<p class="sub">Written by hetfield. This page is self-contained: figures are embedded; links point to files beside it.</p>')
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, path: str | Path) -> Path:
        from hetfield.io.atomic import write_text_atomic

        path = Path(path)
        return write_text_atomic(path, self.render(base=path.parent))
