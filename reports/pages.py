"""The Jinja environment every HTML page renders with (templates/*.j2 in this package): every string
escaped, and an undefined name an error rather than an empty cell."""

from __future__ import annotations

import base64
import hashlib

import jinja2
import markupsafe


def breakable(text: object) -> markupsafe.Markup:
    """`text`, escaped, with a line-break opportunity after each `+` and `/`: a configuration such as
    `int4=8da4w-128+engine=static+compile=default` then wraps between its plugins, not mid-word, in a
    narrow column. Neither character can be part of an escaped entity, so the markup stays safe."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(escaped.replace("+", "+<wbr>").replace("/", "/<wbr>"))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("dia_bench.reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined)
    env.filters["breakable"] = breakable
    return env


def inline_script(name: str) -> dict[str, object]:
    """A script of templates/, as it is on disk (not rendered: it is code, not a template), to put inline,
    with the Content-Security-Policy source that lets that text run and no other: run text that ever
    became markup still could not run a script."""
    env = environment()
    text, _, _ = env.loader.get_source(env, name)
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return {"text": markupsafe.Markup(text), "csp": markupsafe.Markup(f"'sha256-{digest}'")}
