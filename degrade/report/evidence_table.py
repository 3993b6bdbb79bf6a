"""Evidence as HTML tables: dicts as key/value tables, lists of records as one table, numbers in
a monospace face; everything escaped, lists and strings cut so the report stays small."""
from __future__ import annotations

from html import escape
from typing import Any

MAX_ITEMS = 20  # evidence list items / table rows shown before "… N more"
MAX_CHARS = 400  # evidence strings are cut after this many characters
MAX_DEPTH = 3  # nested evidence deeper than this is summarised: keeps the file small


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def value(v: Any, depth: int = 0) -> str:
    """Evidence, readably: dicts as key/value tables, lists of records as tables, lists inline."""
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple, dict)):
        v = v.tolist()  # numpy (or torch) arrays and scalars, as plain Python values
    if isinstance(v, dict):
        if not v:
            return '<span class="muted">{}</span>'
        if depth >= MAX_DEPTH:
            return f'<span class="muted">{{{len(v)} keys}}</span>'
        items = list(v.items())
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{value(x, depth + 1)}</td></tr>"
                       for k, x in items[:MAX_ITEMS])
        return f'<table class="kv">{rows}{_more_row(len(items), 2)}</table>'
    if isinstance(v, (list, tuple)):
        if depth >= MAX_DEPTH:
            return f'<span class="muted">[{len(v)} items]</span>'
        if v and all(isinstance(x, dict) for x in v):
            return records(list(v), depth)
        shown = ", ".join(value(x, depth + 1) for x in list(v)[:MAX_ITEMS])
        more = f' <span class="muted">… {len(v) - MAX_ITEMS} more</span>' if len(v) > MAX_ITEMS else ""
        return f'<span class="list">[{shown}]{more}</span>'
    return _scalar(v)


def records(rows: list[dict], depth: int) -> str:
    """A list of dicts (per-head scores, per-bucket errors…) as one table with a column per key."""
    cols = list(dict.fromkeys(k for r in rows for k in r))[:MAX_ITEMS]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{value(r.get(c, ''), depth + 1)}</td>" for c in cols) + "</tr>"
                   for r in rows[:MAX_ITEMS])
    return (f'<table class="rec"><thead><tr>{head}</tr></thead><tbody>{body}'
            f"{_more_row(len(rows), len(cols))}</tbody></table>")


def _more_row(n: int, span: int) -> str:
    return (f'<tr><td class="muted" colspan="{span}">… {n - MAX_ITEMS} more</td></tr>'
            if n > MAX_ITEMS else "")


def _scalar(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return f'<span class="lit">{_e(v)}</span>'
    if isinstance(v, float):
        return f'<span class="n">{v:.4g}</span>'
    if isinstance(v, int):
        return f'<span class="n">{v}</span>'
    text = str(v)
    if len(text) > MAX_CHARS:
        return f'{_e(text[:MAX_CHARS])}<span class="muted">… ({len(text)} chars)</span>'
    return _e(text)
