"""Plain HTML building blocks for the static report: one self-contained page, inline CSS, no scripts or fonts."""

from __future__ import annotations

import html
from typing import Iterable, Optional, Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; margin-bottom: .4rem; word-break: break-all; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; vertical-align: top; }
th, td:first-child, td.text { text-align: left; }
th { background: #f2f2f2; } tr.paper td { color: #666; font-style: italic; } tr.ours td { font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; }
figure { margin: 0; border: 1px solid #ddd; padding: .4rem; background: #fafafa; }
figure img, figure video { display: block; max-width: 320px; } figure video { width: 320px; }
figure img.face { width: 160px; margin-top: .3rem; }
figcaption { font-size: .8rem; margin-top: .3rem; word-break: break-all; max-width: 320px; }
.note { color: #555; font-size: .85rem; } .error { color: #a00; white-space: pre-wrap; font-family: monospace; }
.ok { color: #060; } .failed { color: #a00; }
.warning { background: #fff3cd; border: 2px solid #c60; padding: .6rem 1rem; font-weight: 600; }
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value, spec: str = ".3f") -> str:
    """A number formatted by `spec`, or an em dash for a missing one."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return format(value, spec)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Optional[Sequence[str]] = None,
          text_columns: Sequence[int] = ()) -> str:
    """A table of cells that are already HTML (escape text with `esc`); `text_columns` are left-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="text">{c}</td>' if k in text_columns else f"<td>{c}</td>"
                        for k, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(caption: str, *media: str) -> str:
    return f"<figure>{''.join(media)}<figcaption>{caption}</figcaption></figure>"


def img(src: str, alt: str, cls: str = "") -> str:
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<img src="{esc(src)}" alt="{esc(alt)}"{cls_attr}>'


def video(src: str, poster: str) -> str:
    return f'<video controls muted preload="metadata" poster="{esc(poster)}" src="{esc(src)}"></video>'


def link(href: str, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
