"""The Jinja environment every HTML page renders with (templates/*.j2 in this package): every string
escaped, and an undefined name an error rather than an empty cell."""

from __future__ import annotations

import jinja2


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("dia_bench.reports", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                              undefined=jinja2.StrictUndefined)
