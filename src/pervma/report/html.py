"""HTML building blocks.  Every piece of text goes through :func:`esc`; only
the helpers here and matplotlib's SVG (cleaned by :func:`inline_svg`) emit
markup.  The page has no scripts, no external resources and no network use.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Raw:
    """Markup built by these helpers (already escaped)."""

    html: str

    def __str__(self) -> str:
        return self.html


def esc(value: object) -> str:
    """Escape any value for HTML text and attribute values."""
    if isinstance(value, Raw):
        return value.html
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return "" if value is None else str(value)


def tag(name: str, body: object = "", cls: str | None = None, **attrs: object) -> Raw:
    a = f' class="{esc(cls)}"' if cls else ""
    for k, v in attrs.items():
        a += f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"'
    return Raw(f"<{name}{a}>{esc(body) if not isinstance(body, Raw) else body.html}</{name}>")


def join(parts: Iterable[object]) -> Raw:
    return Raw("".join(esc(p) if not isinstance(p, Raw) else p.html for p in parts))


def pre(text: str, cls: str | None = None) -> Raw:
    return tag("pre", text, cls)


def link(href: str, text: str) -> Raw:
    return tag("a", text, href=href)


def table(header: Sequence[str], rows: Iterable[Sequence[object]],
          row_classes: Iterable[str | None] | None = None, cls: str = "data",
          numeric: bool = True) -> Raw:
    """A table; numbers are formatted by :func:`fmt` and right-aligned."""
    out = [f'<table class="{esc(cls)}"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    classes = list(row_classes) if row_classes is not None else None
    for i, row in enumerate(rows):
        rc = classes[i] if classes is not None and i < len(classes) else None
        out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        for c in row:
            num = numeric and isinstance(c, int | float) and not isinstance(c, bool)
            out.append(f'<td class="num">{esc(fmt(c))}</td>' if num else f"<td>{esc(fmt(c) if not isinstance(c, Raw) else c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return Raw("".join(out))


def error_box(message: str) -> Raw:
    return tag("div", join([tag("strong", "Error: "), message]), "error")


_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def inline_svg(svg: str, label: str) -> Raw:
    """matplotlib's SVG, ready to sit inside HTML: no XML prologue or DOCTYPE,
    no metadata, a role and an accessible label."""
    s = _SVG_PROLOGUE.sub("", svg, count=1)
    s = _METADATA.sub("", s)
    s = s.replace("<svg ", f'<svg role="img" aria-label="{esc(label)}" class="plot" ', 1)
    return Raw(f'<figure class="plot">{s}<figcaption>{esc(label)}</figcaption></figure>')


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;
padding:1em 2em;color:#1b1b1b;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em}
table.data{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;max-width:100%;overflow-x:auto}
table.data th,table.data td{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
table.data th{background:#f0f0f0}
tr.lock td{background:#fff3c4;font-weight:600}
tr.hole td{color:#888;font-style:italic}
tr.bad td{background:#fde0e0}tr.good td{background:#e3f6e3}tr.warn td{background:#fff6dd}
.error{border:2px solid #c00;background:#fde0e0;padding:.6em 1em;margin:.6em 0;white-space:pre-wrap}
.ok{color:#070}.bad{color:#b00}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em}
figure.plot{display:inline-block;margin:.5em 1em .5em 0}
figure.plot svg{max-width:100%;height:auto;background:#fff}
figcaption{font-size:.85em;color:#555}
details{margin:.5em 0}summary{cursor:pointer}
.muted{color:#666;font-size:.9em}
"""


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], sections: Sequence[Raw]) -> str:
    navs = join(link(f"#{k}", t) for k, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"muted\">{esc(subtitle)}</p>"
            f"<nav>{navs.html}</nav>"
            + "".join(s.html for s in sections) + "</body></html>\n")
