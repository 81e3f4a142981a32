"""Small HTML builders for the report. Every piece of text passes through :func:`esc`.

Builders return HTML strings; only these functions (and :mod:`.page`) write markup,
so no caller has to remember to escape.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def esc(value) -> str:
    """HTML-escape any value's text (quotes included, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 4) -> str:
    """A value as short display text: numbers with ``digits`` significant digits, lists and dicts as plain text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        # whole numbers read as a shape (96 × 96); others as a list
        if len(value) <= 4 and all(isinstance(v, int) for v in value):
            return " × ".join(str(v) for v in value)
        return ", ".join(fmt(v, digits) for v in value)
    if isinstance(value, (list, tuple, dict)):
        text = _readable(value, digits)
        return text if len(text) <= 200 else text[:197] + "…"
    return str(value)


def _readable(value, digits: int) -> str:
    """Nested lists and dicts as plain text, numbers rounded: ``mean 99.27, std 43.9`` rather than JSON."""
    if isinstance(value, dict):
        return ", ".join(f"{k} ({_readable(v, digits)})" if isinstance(v, (dict, list, tuple)) and len(v) > 1 else
                         f"{k} {_readable(v, digits) if isinstance(v, (dict, list, tuple)) else fmt(v, digits)}"
                         for k, v in value.items()) if value else "–"
    if isinstance(value, (list, tuple)):
        parts = [f"({_readable(v, digits)})" if isinstance(v, (dict, list, tuple)) else fmt(v, digits) for v in value]
        return "; ".join(parts) if any(isinstance(v, (dict, list, tuple)) for v in value) else ", ".join(parts)
    return fmt(value, digits)


def sort_key(value) -> str:
    """The ``data-v`` attribute the table sorter reads: a float's repr, ``Infinity``, or empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, cls: str = "") -> str:
    """An ``<img>`` with the PNG embedded as a data URI (the report needs no other file)."""
    klass = f' class="{esc(cls)}"' if cls else ""
    return f'<img{klass} src="{png_data_uri(png)}" alt="{esc(alt)}">'


def figure(png: bytes, caption: str, cls: str = "") -> str:
    return f"<figure>{img(png, caption, cls)}<figcaption>{esc(caption)}</figcaption></figure>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def hex_color(rgb: Sequence[int]) -> str:
    r, g, b = (int(x) for x in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def swatch(rgb: Sequence[int]) -> str:
    return f'<span class="swatch" style="background: {hex_color(rgb)}"></span>'


def caption(text: str) -> str:
    return f'<p class="caption">{esc(text)}</p>'


def columns(*blocks: str) -> str:
    """Blocks side by side (wrapping on narrow screens)."""
    return '<div class="cols">' + "".join(f"<div>{b}</div>" for b in blocks if b) + "</div>"


@dataclass(frozen=True)
class Raw:
    """Markup that is already safe (made by these builders); placed in a table cell unescaped."""

    html: str


def _cell(value) -> str:
    return value.html if isinstance(value, Raw) else esc(fmt(value))


def kv_table(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and values."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_cell(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>' if rows else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, table_id: str = "", numeric: Sequence[bool] = ()) -> str:
    """A plain table; ``numeric[i]`` right-aligns column ``i``."""
    num = list(numeric) + [False] * (len(headers) - len(numeric))
    cls = [' class="num"' if n else "" for n in num]
    head = "".join(f"<th{k}>{esc(h)}</th>" for h, k in zip(headers, cls))
    body = "".join("<tr>" + "".join(f"<td{k}>{_cell(v)}</td>" for v, k in zip(row, cls)) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sortable_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool], table_id: str) -> str:
    """A table whose column headers sort its rows when clicked (see the script in :mod:`.page`).

    Numeric cells carry their exact value in ``data-v`` (missing values sort last,
    in either direction); text cells sort by their text.
    """
    head = "".join(
        f'<th data-type="{"num" if n else "text"}" title="click to sort">{esc(h)}</th>' for h, n in zip(headers, numeric)
    )
    body = []
    for row in rows:
        cells = []
        for v, n in zip(row, numeric):
            if n:
                cells.append(f'<td class="num" data-v="{esc(sort_key(v))}">{esc(fmt(v))}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable" id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')
