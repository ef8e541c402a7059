"""HTML pieces of the report: escaping, number formatting, tables, notes, and reading a run's JSON
files with an error message that names the file. All text from data goes through `esc`.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers for tables: thousands separators for ints, a few significant digits for floats."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if not math.isfinite(x):
            return str(x)
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        if x != 0 and abs(x) < 1e-4:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None, cls: str = "") -> str:
    """An HTML table; cells are escaped (pass already formatted strings or numbers)."""
    if numeric is None:
        numeric = {i for i, _ in enumerate(headers) if rows and all(isinstance(r[i], (int, float, np.number)) or r[i] is None for r in rows)}

    def cell(tag: str, i: int, value: Any) -> str:
        attr = ' class="num"' if i in numeric else ""
        return f"<{tag}{attr}>{esc(value if isinstance(value, str) else fmt(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{esc(text)}</p>'


def short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class BadFile(ValueError):
    """A run file that exists but cannot be used; the message names it."""


def read_json(path: Path) -> Any:
    """JSON of a file; raises BadFile naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadFile(f"{path.parent.name}/{path.name} could not be read: not valid JSON ({e})") from None


def problem(what: str, e: Exception) -> str:
    """The message of a section part that failed on file `what` (stage/name)."""
    return str(e) if isinstance(e, BadFile) else f"{what} could not be read: {type(e).__name__}: {e}"


def number(value: Any) -> float:
    """float(value), NaN when it is not a number (a missing loss in a chart)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
