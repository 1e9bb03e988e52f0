import contextlib
import json
import math
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_router.expressions import (
    BINDINGS,
    FILTER_MAX,
    METHODS,
    URL_MAX,
    ExpressionError,
    ExpressionRuntimeError,
    ExpressionSyntaxError,
    Filter,
    UrlTemplate,
    compile_filter,
    compile_url,
)

pytestmark = pytest.mark.timeout(60)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def attrs(**values: list[Any]) -> list[dict[str, Any]]:
    """Attributes in the platform's list form."""
    return [{"name": name.replace("_", " "), "values": v} for name, v in values.items()]


def holds(expression: str, event: dict[str, Any] | None = None) -> bool:
    return compile_filter(expression).matches(event or {})


def value(expression: str, event: dict[str, Any] | None = None) -> str:
    """An expression's value as String() gives it, observed through a URL template."""
    return unquote(compile_url("/${" + expression + "}").render(event or {})[1:])


# --- the platform's real filters (domain reference, section 4) -----------------------------

REAL_FILTERS = [
    (
        "values('Status') == 'Open'",
        {"submission": {"values": {"Status": "Open"}}},
        {"submission": {"values": {"Status": "Closed"}}},
    ),
    (
        "form('slug') === \"robot-definitions\"",
        {"form": {"slug": "robot-definitions"}},
        {"form": {"slug": "robots"}},
    ),
    (
        "team('name') === 'Role::Employee'",
        {"team": {"name": "Role::Employee"}},
        {"team": {"name": "Role::Manager"}},
    ),
    (
        "!team('name').startsWith('Role::')",
        {"team": {"name": "Facilities"}},
        {"team": {"name": "Role::Employee"}},
    ),
    (
        "user('invitedBy') === null",
        {"user": {"username": "ann"}},
        {"user": {"username": "ann", "invitedBy": "bob"}},
    ),
    (
        "user('attribute:API User') !== 'True'",
        {"user": {"attributes": attrs(API_User=["False"])}},
        {"user": {"attributes": attrs(API_User=["True"])}},
    ),
    (
        "form('attribute:Custom Submission Workflow').indexOf('Submitted') > -1",
        {"form": {"attributes": attrs(Custom_Submission_Workflow=["Created,Submitted"])}},
        {"form": {"attributes": attrs(Custom_Submission_Workflow=["Created"])}},
    ),
    (
        "kapp('attribute:Custom Form Workflow').indexOf('Created') === -1",
        {"kapp": {"attributes": attrs(Custom_Form_Workflow=["Updated"])}},
        {"kapp": {"attributes": attrs(Custom_Form_Workflow=["Created", "Updated"])}},
    ),
]


@pytest.mark.parametrize(("expression", "true_event", "false_event"), REAL_FILTERS)
def test_real_platform_filters(
    expression: str, true_event: dict[str, Any], false_event: dict[str, Any]
) -> None:
    compiled = compile_filter(expression)
    assert compiled.matches(true_event) is True
    assert compiled.matches(false_event) is False


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_filter_always_matches(text: str | None) -> None:
    compiled = compile_filter(text)
    assert isinstance(compiled, Filter)
    assert compiled.matches({}) is True


def test_compiling_keeps_nothing() -> None:
    """Validation compiles every text it is shown; holding on to them would let rejected
    definitions fill the memory. What is kept is the webhook index's business."""
    assert compile_filter("values('a') == 1") is not compile_filter("values('a') == 1")
    assert compile_url("/x/${form('slug')}") is not compile_url("/x/${form('slug')}")


def test_a_filter_up_to_its_limit_compiles_and_a_longer_one_is_refused_unparsed() -> None:
    at_limit = "values('a') == 'b'" + " " * (FILTER_MAX - 18)
    assert len(at_limit) == FILTER_MAX
    assert compile_filter(at_limit).matches({"submission": {"values": {"a": "b"}}})
    with pytest.raises(ExpressionSyntaxError, match=f"at most {FILTER_MAX} characters") as caught:
        compile_filter(at_limit + " ")
    assert caught.value.position == FILTER_MAX
    # refused before parsing: what follows the limit is never looked at
    with pytest.raises(ExpressionSyntaxError, match=f"found {10 * FILTER_MAX}"):
        compile_filter("(" * (10 * FILTER_MAX))


def test_a_url_template_up_to_its_limit_compiles_and_a_longer_one_is_refused() -> None:
    at_limit = "/x/${form('slug')}/" + "a" * (URL_MAX - 19)
    assert len(at_limit) == URL_MAX
    assert compile_url(at_limit).render({"form": {"slug": "f"}}).startswith("/x/f/a")
    with pytest.raises(ExpressionSyntaxError, match=f"at most {URL_MAX} characters"):
        compile_url(at_limit + "a")


def test_ten_thousand_open_parentheses_are_a_clear_syntax_error() -> None:
    with pytest.raises(ExpressionSyntaxError, match="nested too deeply"):
        compile_filter("(" * 2000 + "1" + ")" * 2000)
    with pytest.raises(ExpressionSyntaxError, match=f"at most {FILTER_MAX}"):
        compile_filter("(" * 10_000)


# --- bindings ------------------------------------------------------------------------------

EVENT: dict[str, Any] = {
    "event": {"type": "Submission", "action": "Submitted"},
    "space": {"slug": "acme", "attributes": attrs(Task_Source_Name=["Kinetic Request CE"])},
    "kapp": {"slug": "services", "attributes": {"Icon": ["fa-cog", "fa-x"], "Empty": []}},
    "form": {"slug": "ipad-request", "name": "iPad Request"},
    "submission": {
        "id": "s-1",
        "coreState": "Submitted",
        "values": {"Status": "Open", "Count": "3", "Tags": ["a", "b"], "Nothing": None},
    },
    "user": {
        "username": "ann",
        "spaceAdmin": True,
        "profileAttributes": attrs(Department=["IT"]),
    },
    "team": {"name": "Role::Employee", "slug": "role-employee"},
    "identity": {"username": "bob", "profileAttributes": {"Manager": ["carol"]}},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("space('slug')", "acme"),
        ("kapp('slug')", "services"),
        ("form('name')", "iPad Request"),
        ("submission('coreState')", "Submitted"),
        ("values('Status')", "Open"),
        ("values('Tags')", "a,b"),
        ("user('username')", "ann"),
        ("user('spaceAdmin')", "true"),
        ("team('slug')", "role-employee"),
        ("identity('username')", "bob"),
        ("space('attribute:Task Source Name')", "Kinetic Request CE"),
        ("kapp('attribute:Icon')", "fa-cog"),
        ("user('profileAttribute:Department')", "IT"),
        ("identity('profileAttribute:Manager')", "carol"),
        ("values('attribute:Status')", ""),
    ],
)
def test_bindings_read_the_event(expression: str, expected: str) -> None:
    assert value(expression, EVENT) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "values('Missing')",
        "values('Nothing')",
        "kapp('attribute:Empty')",
        "kapp('attribute:Missing')",
        "form('attribute:Anything')",
        "identity('profileAttribute:Missing')",
        "space('profileAttribute:Department')",
        "user('missing')",
    ],
)
def test_missing_values_are_null(expression: str) -> None:
    assert holds(f"{expression} === null", EVENT)


@pytest.mark.parametrize(
    "expression", [f"{name}('slug') === null" for name in BINDINGS] + ["values('x') === null"]
)
def test_absent_entities_are_null_not_errors(expression: str) -> None:
    assert holds(expression, {})
    assert holds(expression, {"submission": "not an object", "space": [1]})


def test_binding_key_may_be_any_string_expression() -> None:
    assert holds("values(form('slug') === 'ipad-request' ? 'Status' : 'Count') == 'Open'", EVENT)


@pytest.mark.parametrize("expression", ["values(1)", "space(null)", "kapp(values('Tags'))"])
def test_non_string_key_is_a_runtime_error(expression: str) -> None:
    with pytest.raises(ExpressionRuntimeError, match="needs a string key"):
        holds(expression, EVENT)


# --- semantics -----------------------------------------------------------------------------

TRUTHINESS = [
    ("", False),
    (0, False),
    (0.0, False),
    (-0.0, False),
    (math.nan, False),
    (None, False),
    (False, False),
    ([], True),
    ({}, True),
    ("0", True),
    ("false", True),
    (" ", True),
    (1, True),
    (-1.5, True),
    (True, True),
    ([0], True),
]


@pytest.mark.parametrize(("field", "truthy"), TRUTHINESS)
def test_truthiness(field: Any, truthy: bool) -> None:
    event = {"submission": {"values": {"x": field}}}
    assert holds("values('x')", event) is truthy
    assert holds("!values('x')", event) is not truthy


def test_undefined_literal_is_falsy() -> None:
    assert holds("undefined") is False
    assert holds("!undefined") is True


EQUALITY = [
    ("null == undefined", True),
    ("null === undefined", False),
    ("null != undefined", False),
    ("null !== undefined", True),
    ("null == 0", False),
    ("undefined == 0", False),
    ("null == false", False),
    ("null == ''", False),
    ("'1' == 1", True),
    ("'1' === 1", False),
    ("1 === 1.0", True),
    ("1e3 === 1000", True),
    ("true == 1", True),
    ("true === 1", False),
    ("true == '1'", True),
    ("false == ''", True),
    ("false == '0'", True),
    ("2 == true", False),
    ("'' == 0", True),
    ("' \\t\\n' == 0", True),
    ("'0x10' == 16", True),
    ("'1e3' == 1000", True),
    ("'Infinity' == 1e999", True),
    ("'inf' == 1e999", False),
    ("'1_0' == 10", False),
    ("'abc' == 'abc'", True),
    ("'abc' !== 'abd'", True),
    ("'a' == 'A'", False),
]


@pytest.mark.parametrize(("expression", "expected"), EQUALITY)
def test_equality(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


OBJECT_EVENT = {
    "submission": {
        "values": {
            "list": ["a", "b"],
            "one": [1],
            "empty": [],
            "obj": {"k": 1},
            "t": True,
            "n1": 1,
            "nan": math.nan,
            "nans": [math.nan],
        }
    }
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("values('list') == 'a,b'", True),
        ("values('list') === 'a,b'", False),
        ("values('one') == 1", True),
        ("values('empty') == ''", True),
        ("values('empty') == 0", True),
        ("values('empty') == false", True),
        ("values('empty') == null", False),
        ("values('obj') == '[object Object]'", True),
        ("values('list') === values('list')", True),
        ("values('list') == values('one')", False),
        ("values('t') === 1", False),
        ("values('t') == 1", True),
        ("values('n1') === true", False),
        ("values('n1') == true", True),
        ("values('nan') == values('nan')", False),
        ("values('nan') != values('nan')", True),
    ],
)
def test_equality_with_event_values(expression: str, expected: bool) -> None:
    assert holds(expression, OBJECT_EVENT) is expected


RELATIONAL = [
    ("'a' < 'b'", True),
    ("'B' < 'a'", True),
    ("'10' < '9'", True),
    ("10 < 9", False),
    ("'10' < 9", False),
    ("2 <= 2.0", True),
    ("2 >= 3", False),
    ("null < 1", True),
    ("null >= 0", True),
    ("null > -1", True),
    ("undefined < 1", False),
    ("undefined >= 0", False),
    ("'abc' < 1", False),
    ("'abc' >= 1", False),
    ("true > 0", True),
    ("'' < 1", True),
    ("'' <= false", True),
    ("'\\uFFFF' < '\\uD83D\\uDE00'", False),
    ("'\\uFFFF' > '\\u{1F600}'", True),
    ("-1e999 < -1e308", True),
]


@pytest.mark.parametrize(("expression", "expected"), RELATIONAL)
def test_relational(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


def test_relational_with_lists_and_nan() -> None:
    assert holds("values('one') > 0", OBJECT_EVENT)
    assert holds("values('list') > 'a'", OBJECT_EVENT)
    assert not holds("values('nan') < 1", OBJECT_EVENT)
    assert not holds("values('nan') >= 1", OBJECT_EVENT)
    assert not holds("values('obj') < 1", OBJECT_EVENT)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(null || 'x') === 'x'", True),
        ("('' || 0 || null) === null", True),
        ("('a' || values('missing').trim()) === 'a'", True),
        ("(1 && 'a' && 0) === 0", True),
        ("(1 && 'a') === 'a'", True),
        ("(values('missing') && values('missing').startsWith('a')) === null", True),
        ("false && values('missing').trim()", False),
        ("true || values('missing').trim()", True),
    ],
)
def test_logical_operators_return_operands_and_short_circuit(
    expression: str, expected: bool
) -> None:
    assert holds(expression, EVENT) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("true ? 'a' : 'b'", "a"),
        ("0 ? 'a' : 'b'", "b"),
        ("false ? 1 : true ? 2 : 3", "2"),
        ("true ? false ? 1 : 2 : 3", "2"),
        ("null ? 1 : undefined ? 2 : 3", "3"),
        ("1 || 0 ? 'yes' : 'no'", "yes"),
    ],
)
def test_ternary(expression: str, expected: str) -> None:
    assert value(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("!values('Status') == false", True),
        ("1 < 2 == true", True),
        ("3 > 2 > 1", False),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("false && false || true", True),
        ("-'3' === -3", True),
        ("- -3 === 3", True),
        ("!!'x' === true", True),
        ("-values('Status').length === -4", True),
        ("!values('Status').startsWith('O')", False),
        ("values('Status') == 'Open' ? true : false", True),
        ("values('Status') != 'Open' ? true : 1 == 1 && 2 < 1", False),
    ],
)
def test_precedence(expression: str, expected: bool) -> None:
    assert holds(expression, EVENT) is expected


def test_long_or_chains_are_fine() -> None:
    expression = " || ".join(f"values('Status') == '{i}'" for i in range(140))  # ~3.6 KB
    assert holds(expression + " || values('Status') == 'Open'", EVENT)
    assert not holds(expression, EVENT)


# --- methods and .length -------------------------------------------------------------------

METHOD_CASES = [
    ("'Role::Employee'.startsWith('Role::')", "true"),
    ("'Role::Employee'.endsWith('Employee')", "true"),
    ("'abc'.includes('bc')", "true"),
    ("'abc'.includes('')", "true"),
    ("'abc'.indexOf('c')", "2"),
    ("'abc'.indexOf('z')", "-1"),
    ("'\\u{1F600}b'.indexOf('b')", "2"),
    ("'xnullx'.includes(null)", "true"),
    ("'1.5'.startsWith(1.5)", "true"),
    ("'MiXeD'.toLowerCase()", "mixed"),
    ("'MiXeD'.toUpperCase()", "MIXED"),
    ("'straße'.toUpperCase()", "STRASSE"),
    ("' \\t\\u00a0\\ufeffx\\n '.trim()", "x"),
    ("'\\x1cx'.trim().length", "2"),
    ("'abc'.length", "3"),
    ("''.length", "0"),
    ("'\\uD83D\\uDE00'.length", "2"),
    ("values('Tags').length", "2"),
    ("values('Tags').includes('b')", "true"),
    ("values('Tags').includes('c')", "false"),
    ("values('Tags').indexOf('b')", "1"),
    ("values('Tags').indexOf('z')", "-1"),
    ("values('Count').length", "1"),
    ("values('Status').trim().toLowerCase().startsWith('op')", "true"),
    ("(1).length", ""),
    ("'abc'.slug", ""),
    ("submission('values').Status", "Open"),
    ("submission('values').Missing === undefined", "true"),
]


@pytest.mark.parametrize(("expression", "expected"), METHOD_CASES)
def test_methods_and_length(expression: str, expected: str) -> None:
    assert value(expression, EVENT) == expected


def test_list_includes_uses_same_value_zero_and_index_of_strict() -> None:
    assert holds("values('nans').includes(values('nan'))", OBJECT_EVENT)
    assert holds("values('nans').indexOf(values('nan')) === -1", OBJECT_EVENT)
    assert holds("values('one').includes(1) && !values('one').includes('1')", OBJECT_EVENT)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("values('x').startsWith('a')", "cannot call startsWith on null at position 12"),
        ("undefined.trim()", "cannot call trim on undefined at position 10"),
        ("values('Tags').trim()", "cannot call trim on a list at position 15"),
        ("(1).includes(1)", "cannot call includes on a number at position 4"),
        ("true.toLowerCase()", "cannot call toLowerCase on a boolean at position 5"),
        ("submission('values').indexOf('a')", "cannot call indexOf on an object at position 21"),
        ("values('x').length", "cannot read length of null at position 12"),
        ("values(1)", "values() needs a string key but got number at position 7"),
    ],
)
def test_runtime_errors_name_method_and_position(expression: str, message: str) -> None:
    with pytest.raises(ExpressionRuntimeError) as info:
        holds(expression, EVENT)
    assert str(info.value) == message
    assert info.value.position == int(message.rsplit(" ", 1)[1])


def test_receiver_null_error_comes_before_arguments_are_evaluated() -> None:
    with pytest.raises(ExpressionRuntimeError, match="startsWith on null"):
        holds("values('x').startsWith(values(1))", EVENT)


# --- syntax errors -------------------------------------------------------------------------

SYNTAX_ERRORS = [
    ("values('a'", 10, "')'", "end of text"),
    ("== 1", 0, "an expression", "'=='"),
    ("foo('x')", 0, "one of space, kapp, form, submission, values, user, team, identity", "'foo'"),
    ("'unterminated", 13, "closing '", "end of text"),
    ('"line\nbreak"', 5, 'closing "', "end of line"),
    ("values('a').bogus()", 12, "one of startsWith, endsWith", "'bogus'"),
    ("a.bogus()", 0, "an expression", "'a'"),
    ("values('a') == 'b' values('c')", 19, "end of text", "'values'"),
    ("values('a') == 'b')", 18, "end of text", "')'"),
    ("values('a') = 'b'", 12, "end of text", "'='"),
    ("values('a') & values('b')", 12, "end of text", "'&'"),
    ("values('a', 'b')", 10, "')'", "','"),
    ("values()", 7, "an expression", "')'"),
    ("values", 6, "'('", "end of text"),
    ("values('a').trim", 16, "'(' after trim", "end of text"),
    ("values('a').startsWith()", 22, "1 argument to startsWith", "0"),
    ("values('a').trim(1)", 16, "0 arguments to trim", "1"),
    ("values('a').", 12, "a property or method name", "end of text"),
    ("(1 == 1", 7, "')'", "end of text"),
    ("true ? 1", 8, "':'", "end of text"),
    ("1 +", 2, "end of text", "'+'"),
    ("--1", 0, "an expression", "'--'"),
    ("01", 1, "an operator", "'1' right after a number"),
    ("3in", 1, "an operator", "'i' right after a number"),
    ("'\\u12'", 3, "4 hex digits after \\u", "'12''"),
    ("'\\1'", 1, "a valid escape", "'\\1' (octal escapes are not allowed)"),
    ("values('a') # x", 12, "end of text", "'#'"),
    ("values('a') }", 12, "end of text", "'}'"),
    ("", None, None, None),
]


@pytest.mark.parametrize(("text", "position", "expected", "found"), SYNTAX_ERRORS[:-1])
def test_syntax_errors_name_position_and_expectation(
    text: str, position: int, expected: str, found: str
) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_filter(text)
    error = info.value
    assert error.position == position
    assert error.expected.startswith(expected)
    assert str(error).startswith(f"at position {position}: expected {expected}")
    assert f"but found {found}" in str(error)
    assert isinstance(error, ExpressionError)


def test_syntax_error_message_format() -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_filter("values('Status') == (1")
    assert str(info.value) == "at position 22: expected ')' but found end of text"
    assert info.value.message == "expected ')' but found end of text"
    assert info.value.expected == "')'"


def test_hints_for_common_mistakes() -> None:
    with pytest.raises(ExpressionSyntaxError, match=r"use == or === to compare"):
        compile_filter("values('a') = 'b'")
    with pytest.raises(ExpressionSyntaxError, match=r"values takes one argument"):
        compile_filter("values('a', 'b')")


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(ExpressionSyntaxError, match="nested too deeply"):
        compile_filter("(" * 2000 + "1" + ")" * 2000)
    with pytest.raises(ExpressionSyntaxError, match="nested too deeply"):
        compile_filter("!" * 4000 + "1")
    with pytest.raises(ExpressionSyntaxError, match="nested too deeply"):
        compile_filter(" == ".join(["1"] * 800))


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("'it\\'s'", "it's"),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'a\\\\b'", "a\\b"),
        ("'tab\\there'", "tab\there"),
        ("'\\u00e9'", "é"),
        ("'\\x41'", "A"),
        ("'\\q'", "q"),
        ('"it\'s"', "it's"),
        ("'a}b'", "a}b"),
    ],
)
def test_string_escapes(literal: str, expected: str) -> None:
    assert value(literal) == expected


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("3", "3"),
        ("3.0", "3"),
        ("1.5", "1.5"),
        ("-0", "0"),
        (".5", "0.5"),
        ("1e21", "1e+21"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("123456789012345678901", "123456789012345680000"),
        ("0.1", "0.1"),
        ("1e999", "Infinity"),
        ("-1e999", "-Infinity"),
        ("true", "true"),
        ("false", "false"),
        ("null", ""),
        ("undefined", ""),
    ],
)
def test_values_convert_to_strings_like_javascript(literal: str, expected: str) -> None:
    assert value(literal) == expected


def test_event_numbers_and_lists_convert_like_javascript() -> None:
    event = {"submission": {"values": {"n": 3.0, "big": 2**60, "mixed": ["a", None, 1, [2, 3]]}}}
    assert value("values('n')", event) == "3"
    assert value("values('big')", event) == "1152921504606847000"
    assert value("values('mixed')", event) == "a,,1,2,3"
    assert value("submission('values')", event) == "[object Object]"


# --- URL templates -------------------------------------------------------------------------

RUN_TREE = (
    "/app/api/v1/run-tree/${space('attribute:Task Source Name')}"
    "/Submissions%20%3E%20${kapp('slug')}%20%3E%20${form('slug')}/Submitted"
)


def test_domain_run_tree_url() -> None:
    template = compile_url(RUN_TREE)
    assert isinstance(template, UrlTemplate)
    assert template.source == RUN_TREE
    event = {
        "space": {"attributes": attrs(Task_Source_Name=["Kinetic Request CE"])},
        "kapp": {"slug": "services"},
        "form": {"slug": "ipad-request"},
    }
    assert template.render(event) == (
        "/app/api/v1/run-tree/Kinetic%20Request%20CE"
        "/Submissions%20%3E%20services%20%3E%20ipad-request/Submitted"
    )


@pytest.mark.parametrize(
    "slug", ["with space", "a>b", "a/b", "100%", "#frag", "q?x=1", "café", "日本", "a&b=c", "~_.-"]
)
def test_values_are_percent_encoded_completely(slug: str) -> None:
    url = compile_url("/x/${kapp('slug')}/${form('slug')}/y").render(
        {"kapp": {"slug": slug}, "form": {"slug": slug}}
    )
    segments = url.split("/")
    assert segments[:2] == ["", "x"]
    assert segments[-1] == "y"
    assert [unquote(s) for s in segments[2:4]] == [slug, slug]
    for forbidden in " >/#?&":
        assert forbidden not in "".join(segments[2:4])


def test_literal_text_is_copied_untouched() -> None:
    assert compile_url("/a b%20$x}{/${'v'}").render({}) == "/a b%20$x}{/v"


def test_expression_braces_inside_strings() -> None:
    event = {"submission": {"values": {"a}b": "x y", "c": "{z}"}}}
    assert compile_url("/${values('a}b')}/${values(\"c\")}").render(event) == "/x%20y/%7Bz%7D"


def test_absolute_urls() -> None:
    event = {"submission": {"values": {"host": "hooks.example.com", "empty": ""}}}
    assert compile_url("https://${values('host')}/x").render(event) == "https://hooks.example.com/x"
    assert compile_url("HTTP://example.com:8080/${values('host')}").render(event) == (
        "HTTP://example.com:8080/hooks.example.com"
    )
    with pytest.raises(ExpressionRuntimeError, match="has no host"):
        compile_url("https://${values('empty')}/x").render(event)
    with pytest.raises(ExpressionRuntimeError, match="has no host"):
        compile_url("https://${values('missing')}/x").render(event)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${values('u')}", "must be http or https"),
        ("example.com/${values('u')}", "must be http or https"),
        ("${'ftp'}://example.com", "must be http or https"),
        (" https://example.com/${'x'}", "must be http or https"),
        ("http:/${'x'}", "has no host"),
        ("http://example.com:port/${'x'}", "is not a valid URL"),
    ],
)
def test_rendered_url_must_be_relative_or_http(template: str, message: str) -> None:
    with pytest.raises(ExpressionRuntimeError, match=message):
        compile_url(template).render({"submission": {"values": {"u": "https://x.com"}}})


@pytest.mark.parametrize(
    ("template", "position", "expected"),
    [
        ("ftp://example.com/${values('a')}", 0, "http:// or https://"),
        ("javascript:alert(1)", 0, "http:// or https://"),
        ("/x/${values('a')", 16, "'}'"),
        ("/x/${values('a'}", 15, "')'"),
        ("/x/${", 5, "an expression"),
        ("/x/${}", 5, "an expression"),
        ("/x/${foo('a')}", 5, "one of space"),
        ("/x/${values('a') values('b')}", 17, "'}'"),
        ("", 0, "a URL"),
        ("   ", 0, "a URL"),
    ],
)
def test_url_syntax_errors(template: str, position: int, expected: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_url(template)
    assert info.value.position == position
    assert info.value.expected.startswith(expected)


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(ExpressionRuntimeError, match="percent-encoded"):
        compile_url("/${'\\uD800'}").render({})


def test_deeply_nested_event_value_is_a_runtime_error() -> None:
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    event = {"submission": {"values": {"deep": nested}}}
    with pytest.raises(ExpressionRuntimeError, match="nested too deeply"):
        compile_filter("values('deep') == 'x'").matches(event)
    with pytest.raises(ExpressionRuntimeError, match="nested too deeply"):
        compile_url("/${values('deep')}").render(event)


# --- property tests ------------------------------------------------------------------------

ALPHABET = "aA0 .e-é😀\u00a0İß,:"
KEYS = ["slug", "name", "Status", "values", "length", "attribute:Name", "profileAttribute:Name"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.integers(),
    st.floats(),
    st.text(ALPHABET, max_size=5),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(ALPHABET, max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)
attribute_lists = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["Name", "Other"]), "values": json_values}),
    max_size=3,
)
entities = st.dictionaries(
    st.sampled_from(KEYS) | st.text(ALPHABET, max_size=3),
    json_values | attribute_lists,
    max_size=5,
)
events = st.fixed_dictionaries(
    {}, optional={name: entities for name in BINDINGS if name != "values"}
) | st.dictionaries(st.sampled_from(BINDINGS), json_values, max_size=3)


def js_string(text: str, double: bool) -> str:
    body = json.dumps(text)[1:-1]
    return f'"{body}"' if double else "'" + body.replace('\\"', '"').replace("'", "\\'") + "'"


string_literals = st.builds(
    js_string, st.text(ALPHABET, max_size=5) | st.sampled_from(KEYS), st.booleans()
)
number_literals = st.integers(0, 10**6).map(str) | st.floats(
    0, 1e30, allow_nan=False, allow_infinity=False
).map(repr)
keyword_literals = st.sampled_from(["true", "false", "null", "undefined"])


def _binding_call(name: str, key: str) -> str:
    return f"{name}({key})"


binding_calls = st.builds(
    _binding_call,
    st.sampled_from(BINDINGS),
    st.builds(js_string, st.sampled_from(KEYS) | st.text(ALPHABET, max_size=4), st.booleans()),
)
atoms = st.one_of(string_literals, number_literals, keyword_literals, binding_calls)
BINARY = ["||", "&&", "==", "!=", "===", "!==", "<", "<=", ">", ">="]


def _wrap(text: str, paren: bool) -> str:
    return f"({text})" if paren else text


def _method(receiver: str, name: str, args: list[str]) -> str:
    return f"({receiver}).{name}({', '.join(args[: METHODS[name]])})"


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda op, x: f"{op} {x}", st.sampled_from(["!", "-"]), inner),
        st.builds(
            lambda a, op, b, pa, pb: f"{_wrap(a, pa)} {op} {_wrap(b, pb)}",
            inner,
            st.sampled_from(BINARY),
            inner,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(
            lambda a, b, c, p: f"{_wrap(a, p)} ? {b} : {c}", inner, inner, inner, st.booleans()
        ),
        st.builds(lambda x: f"({x})", inner),
        st.builds(lambda x, p: f"({x}).{p}", inner, st.sampled_from(["length", "slug"])),
        st.builds(
            _method, inner, st.sampled_from(list(METHODS)), st.lists(inner, min_size=1, max_size=1)
        ),
        st.builds(_binding_call, st.sampled_from(BINDINGS), inner),
    )


expressions = st.recursive(atoms, _extend, max_leaves=12)


@FAST
@given(st.text() | st.text("()'\"\\.!-=<>&|?:,${} 0123456789eaxu") | st.text(ALPHABET))
def test_any_text_compiles_or_raises_syntax_error(text: str) -> None:
    try:
        compiled: Filter | ExpressionSyntaxError = compile_filter(text)
    except ExpressionSyntaxError as error:
        compiled = error
    if isinstance(compiled, ExpressionSyntaxError):
        assert 0 <= compiled.position <= len(text)
    else:
        assert isinstance(compiled, Filter)


fragments = st.sampled_from(
    [
        *("values(", "'a'", '"b"', ")", "(", ".", "length", "trim()", "startsWith(", "!", "-"),
        *("==", "===", "<", "&&", "||", "?", ":", ",", "null", "1", "1e5", "space", "foo", " "),
    ]
)


@FAST
@given(st.lists(fragments, max_size=12).map("".join), events)
def test_token_soup_compiles_or_raises_syntax_error(text: str, event: dict[str, Any]) -> None:
    try:
        compiled = compile_filter(text)
    except ExpressionSyntaxError:
        return
    with contextlib.suppress(ExpressionRuntimeError):
        assert isinstance(compiled.matches(event), bool)


@FAST
@given(expressions, events)
def test_generated_expressions_evaluate_to_bool_or_runtime_error(
    expression: str, event: dict[str, Any]
) -> None:
    compiled = compile_filter(expression)
    try:
        result: bool | ExpressionRuntimeError = compiled.matches(event)
    except ExpressionRuntimeError as error:
        result = error
    assert result is True or result is False or isinstance(result, ExpressionRuntimeError)


@FAST
@given(st.lists(expressions, min_size=1, max_size=3), st.sampled_from(["/", "https://h/"]), events)
def test_generated_templates_render_to_str_or_runtime_error(
    parts: list[str], prefix: str, event: dict[str, Any]
) -> None:
    template = compile_url(prefix + "/".join("${" + part + "}" for part in parts))
    try:
        url = template.render(event)
    except ExpressionRuntimeError:
        return
    assert url.startswith(prefix)
    assert all(c not in url[len(prefix) :] for c in " ?#")


@FAST
@given(st.text() | st.text("${}'\"()/:htps"))
def test_any_template_compiles_or_raises_syntax_error(text: str) -> None:
    try:
        template = compile_url(text)
    except ExpressionSyntaxError:
        return
    with contextlib.suppress(ExpressionRuntimeError):
        assert isinstance(template.render({}), str)


@FAST
@given(st.text(min_size=1).filter(lambda t: t not in (".", "..")))
def test_any_string_value_round_trips_through_encoding(text: str) -> None:
    """Every value but a dot segment (refused, below) arrives exactly as it was."""
    rendered = compile_url("/${values('v')}").render({"submission": {"values": {"v": text}}})
    assert "/" not in rendered[1:]
    assert unquote(rendered[1:]) == text


# --- dot segments: a value can never move the request to another path ----------------------

TENANT_HOOK = "/tenants/${user('username')}/hook"


@pytest.mark.parametrize("username", ["..", "."])
def test_a_value_that_is_a_dot_segment_is_refused(username: str) -> None:
    with pytest.raises(ExpressionRuntimeError, match="path segment") as caught:
        compile_url(TENANT_HOOK).render({"user": {"username": username}})
    assert caught.value.position == TENANT_HOOK.index("user")


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("/t/.${values('v')}/hook", "."),  # literal and value together make '..'
        ("/t/%2E${values('v')}/hook", "."),  # HTTP clients decode %2E
        ("/t/${values('v')}${values('v')}/hook", "."),
        ("http://h.example:8080/t/${values('v')}", ".."),
        ("https://h.example/${values('v')}?q=1", ".."),
    ],
)
def test_dot_segments_made_with_a_value_are_refused(template: str, value: str) -> None:
    with pytest.raises(ExpressionRuntimeError, match="path segment"):
        compile_url(template).render({"submission": {"values": {"v": value}}})


@pytest.mark.parametrize(
    ("value", "segment"),
    [("...", "..."), ("a..", "a.."), (".hidden", ".hidden"), ("%2E%2E", "%252E%252E")],
)
def test_values_with_dots_that_are_no_dot_segment_render_as_they_are(
    value: str, segment: str
) -> None:
    rendered = compile_url(TENANT_HOOK).render({"user": {"username": value}})
    assert rendered == f"/tenants/{segment}/hook"


def test_dots_outside_the_path_and_in_literal_text_stay() -> None:
    event = {"submission": {"values": {"v": ".."}}}
    assert compile_url("https://h.example/x?q=${values('v')}").render(event) == (
        "https://h.example/x?q=.."
    )
    assert compile_url("/a/../b/${'x'}").render({}) == "/a/../b/x"
