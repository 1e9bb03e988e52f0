"""Webhook filter expressions and URL templates, in the JavaScript subset the platform uses.

Admins write filters such as ``values('Status') == 'Open'`` and URLs such as
``/run-tree/${kapp('slug')}/Submitted`` (header values are templates too, rendered as text,
not percent-encoded). Both are compiled once into a tree of closures and then
evaluated against each event body; nothing from the text is ever run as Python.

The parser is a small hand-written Pratt parser rather than a grammar library because the
grammar is a dozen operators, a dependency would buy nothing, and owning the tokens lets every
syntax error name the exact character offset and what was expected there, which is what an
admin needs when a webhook definition is refused. Evaluation follows JavaScript to the letter
(truthiness, ``==`` coercions, ``||`` returning operand values, UTF-16 string order) so that
definitions carried over from the platform keep their meaning.

Definitions are bounded: a filter longer than ``FILTER_MAX`` or a URL template longer than
``URL_MAX`` characters (a header template longer than ``TEXT_MAX``) is refused before it is
parsed, and nesting deeper than 100 levels is
a syntax error, so compiling any definition takes a few milliseconds and cannot exhaust the
stack. Compiling keeps nothing: the compiled definitions a process holds are those of the
webhooks it serves (``webhooks.WebhookIndex``), never what validation looked at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, NoReturn, Self
from urllib.parse import quote, urlsplit

__all__ = [
    "BINDINGS",
    "FILTER_MAX",
    "METHODS",
    "TEXT_MAX",
    "URL_MAX",
    "ExpressionError",
    "ExpressionRuntimeError",
    "ExpressionSyntaxError",
    "Filter",
    "UrlTemplate",
    "compile_filter",
    "compile_text",
    "compile_url",
]


class ExpressionError(Exception):
    """Base error: ``message`` and ``position`` (0-based char offset in the source, or None)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} at position {self.position}"


class ExpressionSyntaxError(ExpressionError):
    """Raised at compile time; ``expected`` says what would have been valid at ``position``."""

    position: int

    def __init__(self, message: str, position: int, expected: str = "") -> None:
        super().__init__(message, position)
        self.args = (message, position, expected)
        self.expected = expected

    def __str__(self) -> str:
        return f"at position {self.position}: {self.message}"


class ExpressionRuntimeError(ExpressionError):
    """Raised while evaluating against an event, e.g. a method called on null."""


class _Undefined:
    """JavaScript ``undefined``, distinct from ``None`` which stands for ``null``."""

    _instance: Self | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED = _Undefined()

BINDINGS = ("space", "kapp", "form", "submission", "values", "user", "team", "identity")
METHODS: dict[str, int] = {
    "startsWith": 1,
    "endsWith": 1,
    "includes": 1,
    "indexOf": 1,
    "toLowerCase": 0,
    "toUpperCase": 0,
    "trim": 0,
}
_STRING_METHODS = frozenset(METHODS)
_LIST_METHODS = frozenset({"includes", "indexOf"})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "undefined": UNDEFINED}
_PROFILE_BINDINGS = frozenset({"identity", "user"})

# JavaScript WhiteSpace and LineTerminator: what trim() strips and what separates tokens.
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_SPACE_RUN = re.compile(f"[{re.escape(_JS_SPACE)}]*")
_MAX_DEPTH = 100
FILTER_MAX = 4096
"""Longest filter, in characters."""
URL_MAX = 2048
"""Longest URL template, in characters."""
TEXT_MAX = 4096
"""Longest text template (a header value), in characters."""

Event = Mapping[str, Any]
Evaluator = Callable[[Event], Any]


# --- JavaScript value semantics ------------------------------------------------------------


def _kind(value: Any) -> str:
    """The value's type as admins would name it in an error message."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return "object"


def _js_type(value: Any) -> str:
    kind = _kind(value)
    return "object" if kind == "list" else kind


def _number(value: float) -> int | float:
    """Python ints are exact; JavaScript numbers are doubles, so large ints round."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and abs(value) > 2**53:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _truthy(value: Any) -> bool:
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_RADIX = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")


def _string_to_number(text: str) -> int | float:
    text = text.strip(_JS_SPACE)
    if not text:
        return 0
    if _RADIX.fullmatch(text):
        return _number(int(text, 0))
    if not _DECIMAL.fullmatch(text):
        return math.nan
    if text.lstrip("+-") == "Infinity":
        return -math.inf if text.startswith("-") else math.inf
    return float(text)


def _to_number(value: Any) -> int | float:
    if value is None:
        return 0
    if value is UNDEFINED:
        return math.nan
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return _string_to_number(value)
    return _to_number(_to_primitive(value))


def _to_primitive(value: Any) -> Any:
    if _js_type(value) == "object":
        return _to_string(value)
    return value


def _number_to_string(value: float) -> str:
    """Number::toString: shortest round-trip digits, JavaScript's exponent thresholds."""
    value = _number(value)
    if isinstance(value, int):
        if abs(value) < 10**21:
            return str(value)
        value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exp = point - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def _to_string(value: Any, seen: frozenset[int] = frozenset()) -> str:
    """JavaScript String(value); arrays join like Array.prototype.join, cycles as ''."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_to_string(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        if id(value) in seen:
            return ""
        inner = seen | {id(value)}
        return ",".join(
            "" if item is None or item is UNDEFINED else _to_string(item, inner) for item in value
        )
    return "[object Object]"


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def _pair_surrogates(text: str) -> str:
    """'\\uD83D\\uDE00' escapes give two code units; JavaScript sees one character."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _utf16_length(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _strict_equals(left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if kind == "number":
        return bool(_number(left) == _number(right))
    if kind in ("list", "object"):
        return left is right
    return bool(left == right)


def _same_value_zero(left: Any, right: Any) -> bool:
    if _kind(left) == _kind(right) == "number" and math.isnan(left) and math.isnan(right):
        return True
    return _strict_equals(left, right)


def _loose_equals(left: Any, right: Any) -> bool:
    """IsLooselyEqual from the ECMAScript specification."""
    lt, rt = _js_type(left), _js_type(right)
    if lt == rt:
        return _strict_equals(left, right)
    if {lt, rt} == {"null", "undefined"}:
        return True
    if lt == "number" and rt == "string":
        return bool(_number(left) == _string_to_number(right))
    if lt == "string" and rt == "number":
        return bool(_string_to_number(left) == _number(right))
    if lt == "boolean":
        return _loose_equals(int(left), right)
    if rt == "boolean":
        return _loose_equals(left, int(right))
    if lt in ("string", "number") and rt == "object":
        return _loose_equals(left, _to_primitive(right))
    if lt == "object" and rt in ("string", "number"):
        return _loose_equals(_to_primitive(left), right)
    return False


def _compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1; None where JavaScript's comparison is undefined (NaN), making it false."""
    left, right = _to_primitive(left), _to_primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        a, b = _utf16(left), _utf16(right)
        return (a > b) - (a < b)
    x, y = _to_number(left), _to_number(right)
    if math.isnan(x) or math.isnan(y):
        return None
    return (x > y) - (x < y)


_RELATIONS: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}
_EQUALITIES: dict[str, Callable[[Any, Any], bool]] = {
    "==": _loose_equals,
    "!=": lambda a, b: not _loose_equals(a, b),
    "===": _strict_equals,
    "!==": lambda a, b: not _strict_equals(a, b),
}


def _call_method(name: str, receiver: Any, args: list[Any], position: int) -> Any:
    if isinstance(receiver, str) and name in _STRING_METHODS:
        if name == "toLowerCase":
            return receiver.lower()
        if name == "toUpperCase":
            return receiver.upper()
        if name == "trim":
            return receiver.strip(_JS_SPACE)
        search = _to_string(args[0])
        if name == "startsWith":
            return receiver.startswith(search)
        if name == "endsWith":
            return receiver.endswith(search)
        if name == "includes":
            return search in receiver
        index = receiver.find(search)
        return index if index <= 0 else _utf16_length(receiver[:index])
    if isinstance(receiver, list | tuple) and name in _LIST_METHODS:
        if name == "includes":
            return any(_same_value_zero(item, args[0]) for item in receiver)
        return next((i for i, item in enumerate(receiver) if _strict_equals(item, args[0])), -1)
    kind = _kind(receiver)
    raise ExpressionRuntimeError(
        f"cannot call {name} on {'an' if kind == 'object' else 'a'} {kind}", position
    )


def _get_property(receiver: Any, name: str, position: int) -> Any:
    if receiver is None or receiver is UNDEFINED:
        raise ExpressionRuntimeError(f"cannot read {name} of {_kind(receiver)}", position)
    if name == "length" and isinstance(receiver, str):
        return _utf16_length(receiver)
    if name == "length" and isinstance(receiver, list | tuple):
        return len(receiver)
    if isinstance(receiver, Mapping):
        return receiver.get(name, UNDEFINED)
    return UNDEFINED


# --- bindings ------------------------------------------------------------------------------


def _get(container: Any, key: str) -> Any:
    return container.get(key) if isinstance(container, Mapping) else None


def _attribute(attributes: Any, name: str) -> Any:
    """First value of a named attribute, in the platform's list form or a plain dict."""
    if isinstance(attributes, Mapping):
        values = attributes.get(name)
    elif isinstance(attributes, list | tuple):
        values = next(
            (
                item.get("values")
                for item in attributes
                if isinstance(item, Mapping) and item.get("name") == name
            ),
            None,
        )
    else:
        return None
    if isinstance(values, list | tuple):
        return values[0] if values else None
    return values


def _lookup(event: Event, binding: str, key: str) -> Any:
    if binding == "values":
        return _get(_get(_get(event, "submission"), "values"), key)
    entity = _get(event, binding)
    if key.startswith("attribute:"):
        return _attribute(_get(entity, "attributes"), key[len("attribute:") :])
    if binding in _PROFILE_BINDINGS and key.startswith("profileAttribute:"):
        return _attribute(_get(entity, "profileAttributes"), key[len("profileAttribute:") :])
    return _get(entity, key)


# --- tokens --------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "num", "str", "name", "op", "eof"
    text: str
    value: Any
    pos: int


_OPERATORS: tuple[str, ...] = ("===", "!==", "==", "!=", "<=", ">=", "&&", "||", "--")
_OPERATORS += ("<", ">", "!", "-", "(", ")", ".", ",", "?", ":", "}")
_OPERATOR = re.compile("|".join(re.escape(op) for op in _OPERATORS))
"""The operators, longest first where one starts another."""
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMERAL = re.compile(
    r"(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_LINE_ENDS = "\n\r\u2028\u2029"
_HINTS = {
    "=": "use == or === to compare",
    "&": "use && for 'and'",
    "|": "use || for 'or'",
    "+": "arithmetic is not supported",
    "[": "brackets are not supported",
    "--": "decrement is not supported",
}
_BINDING_NAMES = "one of " + ", ".join(BINDINGS)
_METHOD_NAMES = "one of " + ", ".join(METHODS)


def _is_digit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "end of text"
    if token.kind == "num":
        return f"number {token.text}"
    if token.kind == "str":
        text = token.text if len(token.text) <= 30 else token.text[:27] + "..."
        return f"string {text}"
    return f"'{token.text}'"


class _Node(NamedTuple):
    fn: Evaluator
    pos: int
    depth: int = 1


def _constant(value: Any, pos: int) -> _Node:
    return _Node(lambda _event: value, pos)


# --- parser --------------------------------------------------------------------------------

_PREFIX_POWER = 7
_INFIX_POWER = {
    "?": 2,
    "||": 3,
    "&&": 4,
    "==": 5,
    "!=": 5,
    "===": 5,
    "!==": 5,
    "<": 6,
    "<=": 6,
    ">": 6,
    ">=": 6,
    ".": 8,
}


class _Parser:
    """Pratt parser producing closures; positions are offsets into the whole source text."""

    def __init__(self, text: str, start: int = 0) -> None:
        self.text = text
        self.cursor = start
        self.nesting = 0
        self.token = self._lex()

    # tokens

    def _error(self, expected: str, position: int, found: str, hint: str = "") -> NoReturn:
        message = f"expected {expected} but found {found}" + (f" ({hint})" if hint else "")
        raise ExpressionSyntaxError(message, position, expected)

    def _lex(self) -> _Token:
        text = self.text
        i = _SPACE_RUN.match(text, self.cursor).end()  # type: ignore[union-attr]  # matches ""
        if i >= len(text):
            self.cursor = i
            return _Token("eof", "", None, i)
        ch = text[i]
        if ch in "'\"":
            string, end = self._string(i)
            self.cursor = end
            return _Token("str", text[i:end], string, i)
        if _is_digit(ch) or (ch == "." and _is_digit(text[i + 1 : i + 2])):
            match = _NUMERAL.match(text, i)
            end = match.end() if match else i + 1
            if end < len(text) and (text[end].isalnum() or text[end] in "_$"):
                self._error("an operator", end, f"'{text[end]}' right after a number")
            literal = text[i:end]
            exact = len(literal) <= 300 and not any(c in literal for c in ".eE")
            number = int(literal) if exact else float(literal)
            self.cursor = end
            return _Token("num", literal, number, i)
        match = _NAME.match(text, i)
        if match:
            self.cursor = match.end()
            return _Token("name", match.group(), None, i)
        match = _OPERATOR.match(text, i)
        if match:
            self.cursor = match.end()
            return _Token("op", match.group(), None, i)
        self.cursor = i + 1
        return _Token("op", ch, None, i)

    def _string(self, start: int) -> tuple[str, int]:
        text, quote_char = self.text, self.text[start]
        closing = f"closing {quote_char}"
        opened = f"string opened at position {start}"
        out: list[str] = []
        i = start + 1
        while True:
            if i >= len(text):
                self._error(closing, i, "end of text", opened)
            ch = text[i]
            if ch == quote_char:
                return _pair_surrogates("".join(out)), i + 1
            if ch in "\n\r":
                self._error(closing, i, "end of line", opened)
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(text):
                self._error(closing, i + 1, "end of text", opened)
            esc = text[i + 1]
            i += 2
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
            elif esc == "0" and not _is_digit(text[i : i + 1]):
                out.append("\0")
            elif _is_digit(esc):
                self._error("a valid escape", i - 2, f"'\\{esc}' (octal escapes are not allowed)")
            elif esc == "x":
                out.append(chr(self._hex(i, 2, "2 hex digits after \\x")))
                i += 2
            elif esc == "u" and text[i : i + 1] == "{":
                end = text.find("}", i)
                digits = text[i + 1 : end] if end >= 0 else ""
                if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    found = f"'{text[i : end + 1]}'" if end >= 0 else "end of text"
                    self._error("hex digits in \\u{...}", i, found)
                if int(digits, 16) > 0x10FFFF:
                    self._error("a code point up to 10FFFF", i + 1, digits)
                out.append(chr(int(digits, 16)))
                i = end + 1
            elif esc == "u":
                out.append(chr(self._hex(i, 4, "4 hex digits after \\u")))
                i += 4
            elif esc == "\r":
                i += text[i : i + 1] == "\n"
            elif esc not in _LINE_ENDS:
                out.append(esc)

    def _hex(self, at: int, count: int, expected: str) -> int:
        digits = self.text[at : at + count]
        if len(digits) != count or not all(c in "0123456789abcdefABCDEF" for c in digits):
            self._error(expected, at, f"'{digits}'" if digits else "end of text")
        return int(digits, 16)

    def advance(self) -> _Token:
        token = self.token
        self.token = self._lex()
        return token

    def at(self, op: str) -> bool:
        return self.token.kind == "op" and self.token.text == op

    def expect(self, op: str, hint: str = "") -> _Token:
        if not self.at(op):
            self.fail(f"'{op}'", hint)
        return self.advance()

    def fail(self, expected: str, hint: str = "") -> NoReturn:
        token = self.token
        self._error(expected, token.pos, _describe(token), hint or _HINTS.get(token.text, ""))

    def node(self, fn: Evaluator, pos: int, *children: _Node) -> _Node:
        depth = 1 + max((c.depth for c in children), default=0)
        if depth > _MAX_DEPTH:
            self._error("a simpler expression", pos, "an expression nested too deeply")
        return _Node(fn, pos, depth)

    # grammar

    def expression(self, right_power: int = 0) -> _Node:
        self.nesting += 1
        if self.nesting > _MAX_DEPTH:
            self._error("a simpler expression", self.token.pos, "an expression nested too deeply")
        left = self.prefix()
        while self.token.kind == "op" and _INFIX_POWER.get(self.token.text, 0) > right_power:
            left = self.infix(left)
        self.nesting -= 1
        return left

    def prefix(self) -> _Node:
        token = self.token
        if token.kind in ("num", "str"):
            self.advance()
            return _constant(token.value, token.pos)
        if token.kind == "name":
            self.advance()
            if token.text in _LITERALS:
                return _constant(_LITERALS[token.text], token.pos)
            if token.text in BINDINGS:
                return self.binding(token)
            if self.at("("):
                self._error(_BINDING_NAMES, token.pos, f"'{token.text}'")
            self._error("an expression", token.pos, f"'{token.text}'")
        if self.at("("):
            self.advance()
            inner = self.expression()
            self.expect(")")
            return inner
        if self.at("!") or self.at("-"):
            self.advance()
            operand = self.expression(_PREFIX_POWER)
            fn = operand.fn
            if token.text == "!":
                return self.node(lambda e: not _truthy(fn(e)), token.pos, operand)
            return self.node(lambda e: -_to_number(fn(e)), token.pos, operand)
        self.fail("an expression")

    def binding(self, name: _Token) -> _Node:
        self.expect("(", f"{name.text} is called like {name.text}('key')")
        argument = self.expression()
        self.expect(")", f"{name.text} takes one argument" if self.at(",") else "")
        binding, key_fn, key_pos = name.text, argument.fn, argument.pos

        def evaluate(event: Event) -> Any:
            key = key_fn(event)
            if not isinstance(key, str):
                raise ExpressionRuntimeError(
                    f"{binding}() needs a string key but got {_kind(key)}", key_pos
                )
            return _lookup(event, binding, key)

        return self.node(evaluate, name.pos, argument)

    def infix(self, left: _Node) -> _Node:
        op = self.advance()
        if op.text in ("||", "&&"):
            return self.logical(op, left)
        if op.text == "?":
            then = self.expression()
            self.expect(":")
            otherwise = self.expression(_INFIX_POWER["?"] - 1)
            test, yes, no = left.fn, then.fn, otherwise.fn
            return self.node(
                lambda e: yes(e) if _truthy(test(e)) else no(e), op.pos, left, then, otherwise
            )
        if op.text == ".":
            return self.member(left)
        right = self.expression(_INFIX_POWER[op.text])
        lhs, rhs = left.fn, right.fn
        if op.text in _EQUALITIES:
            equality = _EQUALITIES[op.text]
            return self.node(lambda e: equality(lhs(e), rhs(e)), op.pos, left, right)
        relation = _RELATIONS[op.text]

        def compare(event: Event) -> bool:
            order = _compare(lhs(event), rhs(event))
            return order is not None and relation(order)

        return self.node(compare, op.pos, left, right)

    def logical(self, op: _Token, first: _Node) -> _Node:
        """A run of the same operator becomes one flat node, so long chains stay shallow."""
        operands = [first]
        operands.append(self.expression(_INFIX_POWER[op.text]))
        while self.at(op.text):
            self.advance()
            operands.append(self.expression(_INFIX_POWER[op.text]))
        fns = [o.fn for o in operands]
        stop_when = op.text == "||"

        def evaluate(event: Event) -> Any:
            value: Any = None
            for fn in fns:
                value = fn(event)
                if _truthy(value) is stop_when:
                    return value
            return value

        return self.node(evaluate, op.pos, *operands)

    def member(self, receiver: _Node) -> _Node:
        name = self.token
        if name.kind != "name":
            self.fail("a property or method name")
        self.advance()
        target = receiver.fn
        if not self.at("("):
            if name.text in METHODS:
                self.fail(f"'(' after {name.text}", f"{name.text} is a method")
            prop = name.text
            return self.node(lambda e: _get_property(target(e), prop, name.pos), name.pos, receiver)
        if name.text not in METHODS:
            self._error(_METHOD_NAMES, name.pos, f"'{name.text}'")
        open_paren = self.advance()
        args: list[_Node] = []
        if not self.at(")"):
            args.append(self.expression())
            while self.at(","):
                self.advance()
                args.append(self.expression())
        self.expect(")")
        arity = METHODS[name.text]
        if len(args) != arity:
            plural = "" if arity == 1 else "s"
            self._error(f"{arity} argument{plural} to {name.text}", open_paren.pos, f"{len(args)}")
        method, arg_fns = name.text, [a.fn for a in args]

        def call(event: Event) -> Any:
            value = target(event)
            if value is None or value is UNDEFINED:
                raise ExpressionRuntimeError(f"cannot call {method} on {_kind(value)}", name.pos)
            return _call_method(method, value, [f(event) for f in arg_fns], name.pos)

        return self.node(call, name.pos, receiver, *args)


# --- public API ----------------------------------------------------------------------------


class Filter:
    """A compiled webhook filter; an empty filter matches every event."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: Evaluator | None) -> None:
        self.source = source
        self._fn = fn

    def matches(self, event: Mapping[str, Any]) -> bool:
        """JavaScript truthiness of the filter's value for this event body."""
        if self._fn is None:
            return True
        try:
            return _truthy(self._fn(event))
        except RecursionError:
            raise ExpressionRuntimeError("event value nested too deeply to evaluate") from None

    def __repr__(self) -> str:
        return f"Filter({self.source!r})"


class UrlTemplate:
    """A compiled URL template: literal text and ``${expression}`` parts, in order."""

    __slots__ = ("_parts", "source")

    def __init__(self, source: str, parts: tuple[str | _Node, ...]) -> None:
        self.source = source
        self._parts = parts

    def render(self, event: Mapping[str, Any]) -> str:
        """Substitute each expression's value percent-encoded; the result must be usable.

        A value that makes a whole path segment `.` or `..` is refused: HTTP clients resolve
        such segments (encoded as %2E too), so the value would move the request elsewhere."""
        url, spans = self._substitute(event, encode=True)
        _check_rendered(url)
        if spans:
            _check_dot_segments(url, spans)
        return url

    def text(self, event: Mapping[str, Any]) -> str:
        """Substitute each expression's value as it is (a header value): no encoding and no
        URL checks; what the text may hold is the caller's to check."""
        return self._substitute(event, encode=False)[0]

    def _substitute(
        self, event: Mapping[str, Any], *, encode: bool
    ) -> tuple[str, list[tuple[int, int, int]]]:
        out: list[str] = []
        spans: list[tuple[int, int, int]] = []
        length = 0
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                length += len(part)
                continue
            try:
                value = part.fn(event)
                text = "" if value is None or value is UNDEFINED else _to_string(value)
            except RecursionError:
                raise ExpressionRuntimeError(
                    "event value nested too deeply to evaluate", part.pos
                ) from None
            try:
                encoded = quote(text, safe="") if encode else text
            except UnicodeEncodeError:
                raise ExpressionRuntimeError(
                    "value cannot be percent-encoded (it contains a lone surrogate)", part.pos
                ) from None
            out.append(encoded)
            spans.append((length, length + len(encoded), part.pos))
            length += len(encoded)
        return "".join(out), spans

    def __repr__(self) -> str:
        return f"UrlTemplate({self.source!r})"


def _check_rendered(url: str) -> None:
    """Only a path for the workflow engine or an http(s) URL with a host can be sent."""
    if url.startswith("/"):
        return
    shown = url if len(url) <= 80 else url[:77] + "..."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ExpressionRuntimeError(f"rendered URL {shown!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or url[: len(scheme)].lower() != scheme:
        raise ExpressionRuntimeError(
            f"rendered URL {shown!r} must be http or https, or start with '/'"
        )
    if not parts.hostname:
        raise ExpressionRuntimeError(f"rendered URL {shown!r} has no host")


_DOT_SEGMENTS = frozenset({".", ".."})
_DOT_SEGMENT_MAX = len("%2e%2e")
"""Longest spelling of a dot segment: a longer segment is none."""


def _path_bounds(url: str) -> tuple[int, int]:
    """Where the path of a rendered URL starts and ends (query and fragment excluded)."""
    start = 0
    if not url.startswith("/"):
        authority = url.find("//") + 2
        slash = url.find("/", authority)
        start = len(url) if slash < 0 else slash
    end = min((i for i in (url.find("?", start), url.find("#", start)) if i >= 0), default=-1)
    return start, len(url) if end < 0 else end


def _check_dot_segments(url: str, spans: list[tuple[int, int, int]]) -> None:
    """Refuse a path segment `.` or `..` (or its %2E forms) that a value helped to make."""
    start, end = _path_bounds(url)
    position = start
    for segment in url[start:end].split("/"):
        seg_start, seg_end = position, position + len(segment)
        position = seg_end + 1
        if (
            len(segment) > _DOT_SEGMENT_MAX
            or segment.lower().replace("%2e", ".") not in _DOT_SEGMENTS
        ):
            continue
        for value_start, value_end, pos in spans:
            if value_start < seg_end and seg_start < value_end:
                raise ExpressionRuntimeError(
                    f"value makes the path segment {segment!r}, which would move the request "
                    "to another path",
                    pos,
                )


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def _check_length(text: str, what: str, limit: int) -> None:
    if len(text) > limit:
        raise ExpressionSyntaxError(
            f"expected a {what} of at most {limit} characters but found {len(text)}",
            limit,
            f"at most {limit} characters",
        )


def _compile_filter(text: str) -> Filter:
    _check_length(text, "filter", FILTER_MAX)
    parser = _Parser(text)
    if parser.token.kind == "eof":
        return Filter(text, None)
    root = parser.expression()
    if parser.token.kind != "eof":
        parser.fail("end of text")
    return Filter(text, root.fn)


def _compile_url(template: str) -> UrlTemplate:
    _check_length(template, "URL template", URL_MAX)
    if not template.strip(_JS_SPACE):
        raise ExpressionSyntaxError("expected a URL but found an empty template", 0, "a URL")
    first = template.find("${")
    scheme = _SCHEME.match(template if first < 0 else template[:first])
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise ExpressionSyntaxError(
            f"expected http:// or https:// or a path starting with '/' "
            f"but found scheme '{scheme.group(1)}'",
            0,
            "http:// or https:// or a path starting with '/'",
        )
    return _compile_template(template)


def _compile_template(template: str) -> UrlTemplate:
    parts: list[str | _Node] = []
    i = 0
    while (start := template.find("${", i)) >= 0:
        if start > i:
            parts.append(template[i:start])
        parser = _Parser(template, start + 2)
        parts.append(parser.expression())
        if not parser.at("}"):
            parser.fail("'}'", "each ${ needs a closing }")
        i = parser.cursor
    if i < len(template):
        parts.append(template[i:])
    return UrlTemplate(template, tuple(parts))


def compile_filter(text: str | None) -> Filter:
    """Compile a filter, keeping nothing; empty means always true. ExpressionSyntaxError
    for a filter over ``FILTER_MAX`` characters or not in the grammar."""
    return _compile_filter("" if text is None else text)


def compile_url(template: str) -> UrlTemplate:
    """Compile a URL template, keeping nothing. ExpressionSyntaxError for a template over
    ``URL_MAX`` characters or not in the grammar."""
    return _compile_url(template)


def compile_text(template: str) -> UrlTemplate:
    """Compile a text template (a header value; render it with `.text`), keeping nothing.
    ExpressionSyntaxError for a template over ``TEXT_MAX`` characters or not in the
    grammar; empty text is allowed."""
    _check_length(template, "header template", TEXT_MAX)
    return _compile_template(template)
