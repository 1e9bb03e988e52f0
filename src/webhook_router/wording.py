"""Validation failures in the house's words: what every front end (API, console, CLI) shows
when pydantic refuses input, here and nowhere else.

A message says what the value must be (`must be a string`, `is required`), in the field's
terms; pydantic's own wording (`Input should be ...`, `Value error, ...`, the names of
internal classes) never reaches a user. Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import ErrorDetails

DATE_TIME = "must be a date-time, e.g. 2024-05-01T00:00:00Z"
_BY_TYPE = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "datetime_type": DATE_TIME,
    "datetime_parsing": DATE_TIME,
    "datetime_from_date_parsing": DATE_TIME,
    "string_pattern_mismatch": "contains characters that are not allowed",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}
_PYDANTIC = re.compile(r"^(Value error, |Assertion failed, )")
_INSTANCE = re.compile(r" or instance of \w+")


def plain(error: ErrorDetails) -> str:
    """One pydantic error as the message a user reads."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _BY_TYPE:
        return _BY_TYPE[kind]
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        return text.format(ctx.get(key, "the limit"))
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', 'the values allowed')}"
    message = _INSTANCE.sub("", _PYDANTIC.sub("", error["msg"]))
    return re.sub(r"^Input should (be|have)", r"must \1", message)


def where(error: ErrorDetails, default: str = "body") -> str:
    """The dotted path of the field at fault (`space.slug`), or `default` for the whole."""
    return ".".join(str(part) for part in error["loc"]) or default
