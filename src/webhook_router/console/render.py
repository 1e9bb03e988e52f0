"""Templates and the small formatting helpers the pages share.

Jinja2 with autoescape on for every template: whatever comes from events, webhooks or
answers is text in the page, never markup.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import orjson

from webhook_router.expressions import ExpressionError, ExpressionSyntaxError

PREFIX = "/console"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.1f} s"


def status_class(status: str | None) -> str:
    return "status-" + (status or "none").lower().replace(" ", "-")


def pretty_json(text: str | None) -> str:
    """JSON indented for reading; anything else as it came."""
    if text is None:
        return ""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


def space_url(space: str, *parts: str, **query: Any) -> str:
    """`/console/spaces/{space}/...`, each part percent-encoded on its own."""
    path = "/".join([PREFIX, "spaces", quote(space, safe="")] + [quote(p, safe="") for p in parts])
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where in a filter or URL a parse error is: the line, and a caret under the column."""

    message: str
    position: int | None
    expected: str
    line: int
    column: int
    excerpt: str
    caret: str

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": False,
            "message": self.message,
            "position": self.position,
            "expected": self.expected,
            "line": self.line,
            "column": self.column,
            "excerpt": self.excerpt,
            "caret": self.caret,
        }


def pointer(text: str, error: ExpressionError) -> Pointer:
    position = error.position
    expected = error.expected if isinstance(error, ExpressionSyntaxError) else ""
    if position is None:
        return Pointer(str(error), None, expected, 0, 0, "", "")
    at = min(max(position, 0), len(text))
    line = text.count("\n", 0, at) + 1
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    excerpt = text[start : end if end >= 0 else len(text)]
    column = at - start
    return Pointer(str(error), position, expected, line, column + 1, excerpt, " " * column + "^")


class Assets:
    """The package's static files, read once, addressed with a content hash for caching."""

    def __init__(self) -> None:
        folder = resources.files("webhook_router.console").joinpath("static")
        self.files: dict[str, tuple[bytes, str]] = {}
        self.versions: dict[str, str] = {}
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in STATIC_TYPES:
                data = entry.read_bytes()
                self.files[entry.name] = (data, STATIC_TYPES[suffix])
                self.versions[entry.name] = hashlib.sha256(data).hexdigest()[:12]

    def url(self, name: str) -> str:
        return f"{PREFIX}/static/{name}?v={self.versions[name]}"


_URL_BREAK = re.compile(r"(?<=[/?&=])|(?<=%20)")


def url_parts(url: str | None) -> list[str]:
    """A URL cut after each `/`, `?`, `&`, `=` and encoded space: the page puts a line-break
    opportunity (`<wbr>`) between the parts, so a long URL wraps there, not inside a word."""
    return [part for part in _URL_BREAK.split(url or "") if part]


def environment(assets: Assets) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("webhook_router.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        duration=duration,
        status_class=status_class,
        pretty_json=pretty_json,
        url_parts=url_parts,
    )
    env.globals.update(prefix=PREFIX, space_url=space_url, static=assets.url)
    return env
