"""HTML helpers of the report: the page, tables, cells, number formats and inline figures. No pyspark."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

DPI = 90


MISSING = "–"


CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 1.5rem 2rem 4rem; color: #1f2328; line-height: 1.45; }
header h1 { margin-bottom: .2rem; }
.meta { color: #57606a; margin-top: 0; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; }
nav a { color: #0969da; text-decoration: none; }
section { border-top: 1px solid #d0d7de; margin-top: 2rem; padding-top: .5rem; }
h2 { margin: .6rem 0 .8rem; }
h3 { margin: 1.2rem 0 .5rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
caption { text-align: left; color: #57606a; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td, tr.mean th { border-top: 2px solid #8c959f; background: #fbfbfc; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .88rem; margin-top: .3rem; max-width: 60rem; }
p.na { color: #8a4600; background: #fff8c5; border: 1px solid #eac54f; border-radius: 4px;
       padding: .35rem .7rem; display: inline-block; margin: .3rem 0; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; color: #0969da; }
ul.messages li, ul.notes li { margin: .15rem 0; }
footer { margin-top: 3rem; color: #8c959f; font-size: .8rem; }
"""


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_page(
    *, title: str, run_date: str, generated_at: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]
) -> str:
    """The whole HTML page: head with the inline CSS and the CSP, a heading, a table of contents, the sections."""
    meta = []
    if run_date:
        meta.append(f"run date {html.escape(run_date)}")
    if generated_at:
        meta.append(f"generated {html.escape(generated_at)}")
    links = "".join(f'<li><a href="#{key}">{html.escape(heading)}</a></li>' for key, heading in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="meta">{" · ".join(meta)}</p>\n</header>\n'
        f'<nav aria-label="Sections"><ul>{links}</ul></nav>\n'
        + "\n".join(sections)
        + "\n<footer>Self-contained report written by custembed: no network access needed to view it.</footer>\n"
        "</body>\n</html>\n"
    )


def not_available(reason: str) -> str:
    return f'<p class="na">not available: {html.escape(reason)}</p>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def cell(
    text: str,
    *,
    header: bool = False,
    numeric: bool = False,
    bold: bool = False,
    colspan: int = 1,
    rowspan: int = 1,
    scope: str | None = None,
) -> str:
    tag = "th" if header else "td"
    attributes = ""
    if numeric and not header:
        attributes += ' class="num"'
    if colspan > 1:
        attributes += f' colspan="{colspan}"'
    if rowspan > 1:
        attributes += f' rowspan="{rowspan}"'
    if scope:
        attributes += f' scope="{scope}"'
    content = html.escape(text)
    if bold:
        content = f"<strong>{content}</strong>"
    return f"<{tag}{attributes}>{content}</{tag}>"


def html_table(
    head_rows: Sequence[Sequence[str]], body_rows: Sequence[tuple[Sequence[str], str]], caption: str | None = None
) -> str:
    """Rows are lists of already built cells; body rows carry a CSS class ("" for none)."""
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead>" + "".join(f"<tr>{''.join(row)}</tr>" for row in head_rows) + "</thead>")
    body = []
    for cells, css_class in body_rows:
        class_attribute = f' class="{css_class}"' if css_class else ""
        body.append(f"<tr{class_attribute}>{''.join(cells)}</tr>")
    parts.append("<tbody>" + "".join(body) + "</tbody></table>")
    return "".join(parts)


def as_float(value: object) -> float:
    """A finite float or NaN (None, text and infinities become NaN)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def fmt(value: object, digits: int) -> str:
    number = as_float(value)
    return MISSING if math.isnan(number) else f"{number:.{digits}f}"


def fmt_count(value: object) -> str:
    number = as_float(value)
    return MISSING if math.isnan(number) else f"{int(round(number)):,}"


def fmt_parameters(value: object) -> str:
    number = as_float(value)
    if math.isnan(number):
        return MISSING
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= scale:
            return f"{number / scale:.1f} {suffix} ({int(number):,})"
    return f"{int(number):,}"


def fmt_duration(value: object) -> str:
    seconds = as_float(value)
    if math.isnan(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_rate(value: object) -> str:
    number = as_float(value)
    return MISSING if math.isnan(number) else f"{number:,.0f}/s"


def best_flags(values: Sequence[float], digits: int) -> list[bool]:
    """Which values tie for the highest as shown (rounded to ``digits``).

    Nothing is marked when fewer than two values are known or all shown values are equal.
    """
    shown = [round(value, digits) for value in values]
    known = [value for value in shown if not math.isnan(value)]
    if len(known) < 2 or min(known) == max(known):
        return [False] * len(values)
    best = max(known)
    return [not math.isnan(value) and value == best for value in shown]


def natural_key(text: str) -> list[object]:
    """Sort "layer 10" after "layer 2"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def in_order(values: pd.Series) -> list[str]:
    """Distinct values as text, in order of first appearance."""
    return [str(value) for value in pd.unique(values.astype(str))]


def figure_html(figure: Figure, *, alt: str, caption: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure>\n<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">\n'
        f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>"
    )
