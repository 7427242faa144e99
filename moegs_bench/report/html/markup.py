"""HTML text of the report: escaping, element helpers, file-name slugs and the page shell with
its inline style sheet (no scripts, no external resources)."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Mapping

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
nav{margin-bottom:1em;padding-bottom:.4em;border-bottom:1px solid #ccc}nav a{margin-right:1em}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.6em}h3{font-size:1.05em}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.4em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:2px 6px;white-space:nowrap}thead th{background:#f3f3f3}
tbody th{text-align:left;font-weight:normal}
td.num{text-align:right;font-variant-numeric:tabular-nums}td a,th a{text-decoration:none}
tr.paper td,tr.paper th{background:#f7f4ea;color:#555}
ul.notes{font-size:12px;color:#555;max-width:100ch}p.missing{color:#a33}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{font-size:12px;max-width:100ch}
img.px{image-rendering:pixelated}code{font-size:12px;white-space:pre-wrap;word-break:break-all}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}
tr:target,li:target{outline:2px solid #e90}
"""

_SCHEME = re.compile(r"\bhttps?://", re.IGNORECASE)
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def esc(text: object) -> str:
    """`text` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def offline(text: object) -> str:
    """`text` with URL schemes dropped: the report opens offline, so nothing in it points to the
    network (notes may name where to download something; the address stays readable)."""
    return _SCHEME.sub("", str(text))


def attrs(values: Mapping[str, object | None]) -> str:
    """` name="value"` pairs (values escaped); None values are left out."""
    return "".join(f' {k}="{esc(v)}"' for k, v in values.items() if v is not None)


def tag(name: str, body: str = "", **values: object | None) -> str:
    """`<name attrs>body</name>`; `body` is HTML (escape text first). `cls` gives `class`,
    `data_x` gives `data-x`."""
    named = {("class" if k == "cls" else k.replace("_", "-")): v for k, v in values.items()}
    return f"<{name}{attrs(named)}>{body}</{name}>"


def link(href: str, text: str, title: str | None = None) -> str:
    """An `<a>` with escaped text."""
    return tag("a", esc(text), href=href, title=title)


def slug(text: str) -> str:
    """A file-name and id-safe form of `text`: letters, digits, `_ . -`; a short hash is added
    when characters were replaced, so different texts never share a slug."""
    clean = _SLUG_BAD.sub("_", text).strip("_.") or "x"
    if clean == text:
        return clean
    return f"{clean}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def bullet_list(items: Iterable[str], cls: str | None = None) -> str:
    """`<ul>` of HTML items (empty string without items)."""
    items = list(items)
    return tag("ul", "".join(tag("li", i) for i in items), cls=cls) if items else ""


def page(title: str, body: str, nav: Iterable[tuple[str, str]] = ()) -> str:
    """A whole HTML document: `title`, a navigation bar of (href, text) and `body` (HTML)."""
    bar = tag("nav", "".join(link(h, t) for h, t in nav)) if nav else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
        "<link rel=\"icon\" href=\"data:,\">"
        f"<style>{CSS}</style></head><body>{bar}<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )
