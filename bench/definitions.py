"""Compiling maximal webhook definitions: the slowest shapes of filter and URL template at
their length limits (FILTER_MAX, URL_MAX), each compiled `--rounds` times; prints the
median and the worst milliseconds per compile of each shape, and the limit they must stay
under (50 ms). Also shows that validating definitions keeps nothing in memory.

    python bench/definitions.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable

from webhook_router.expressions import (
    FILTER_MAX,
    URL_MAX,
    ExpressionSyntaxError,
    compile_filter,
    compile_url,
)
from webhook_router.webhooks import WebhookInvalid, check_definition

BUDGET_MS = 50.0


def fill(unit: str, limit: int, head: str = "", tail: str = "") -> str:
    """`head` + as many `unit` as fit + `tail`, at most `limit` characters."""
    count = (limit - len(head) - len(tail)) // len(unit)
    return head + unit * count + tail


def nested(limit: int) -> str:
    """Groups nested 99 deep, repeated with || until the limit."""
    group = "(" * 97 + "values('a')" + ")" * 97
    return fill(group + "||", limit, tail="true")


FILTERS: dict[str, str] = {
    "|| chain of comparisons": fill("values('a')=='b'||", FILTER_MAX, tail="true"),
    "&& chain of !": fill("!values('a')&&", FILTER_MAX, tail="true"),
    "method chains": fill("values('a').trim().toLowerCase()=='x'||", FILTER_MAX, tail="true"),
    "nested groups": nested(FILTER_MAX),
    "ternaries": fill("values('a')?1:", FILTER_MAX, tail="0"),
    "one string of escapes": fill("\\u0041", FILTER_MAX - 2, head="'", tail="'"),
    "tokens, no spaces": fill("1<2||", FILTER_MAX, tail="1"),
    "whitespace": " " * (FILTER_MAX - 4) + "true",
}
URLS: dict[str, str] = {
    "many ${} parts": fill("/${values('a')}", URL_MAX, head="https://h.example"),
    "one long expression": "/${" + fill("values('a')||", URL_MAX - 4, tail="'x'") + "}",
    "literal text": fill("a", URL_MAX, head="https://h.example/"),
}


def measure(
    compile_one: Callable[[str], object], text: str, rounds: int
) -> tuple[float, float, str]:
    """Median and worst milliseconds, and whether the text compiled or was refused (a
    refusal found late in a long text costs as much as a compile)."""
    times = []
    outcome = "compiles"
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            compile_one(text)
        except ExpressionSyntaxError as exc:
            outcome = f"refused at {exc.position}"
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), outcome


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    worst = 0.0
    print(f"FILTER_MAX={FILTER_MAX} URL_MAX={URL_MAX} budget={BUDGET_MS:g} ms per compile")
    print(f"{'shape':<32} {'chars':>6} {'median ms':>10} {'worst ms':>9}  outcome")
    for kind, shapes, compile_one in (
        ("filter", FILTERS, compile_filter),
        ("url", URLS, compile_url),
    ):
        for name, text in shapes.items():
            median, slowest, outcome = measure(compile_one, text, args.rounds)
            worst = max(worst, median)
            shape = f"{kind}: {name}"
            print(f"{shape:<32} {len(text):>6} {median:>10.2f} {slowest:>9.2f}  {outcome}")
    # validation keeps nothing: many distinct maximal definitions, valid and refused
    gc.collect()
    before = rss_mb()
    for n in range(2000):
        text = fill(f"values('a{n}')=='b'||", FILTER_MAX, tail="true")
        check_definition(
            kapp=None,
            name="bench",
            type="User",
            event="Created",
            filter=text,
            url="/x",
            auth_strategy=None,
        )
    for n in range(8):
        try:
            compile_filter(fill(f"values('a{n}')=='b'||", 900_000, tail="true"))
        except ExpressionSyntaxError:
            pass
        else:
            raise SystemExit("a 0.9 MB filter compiled")
        with contextlib.suppress(WebhookInvalid):
            check_definition(
                kapp=None,
                name="bench",
                type="User",
                event="Created",
                filter="x" * 900_000,
                url="/x",
                auth_strategy=None,
            )
    gc.collect()
    print(
        f"2000 maximal filters validated and 16 of 0.9 MB refused: "
        f"peak RSS {before:.0f} MB -> {rss_mb():.0f} MB"
    )
    verdict = "within" if worst < BUDGET_MS else "OVER"
    print(f"slowest shape's median {worst:.2f} ms: {verdict} the {BUDGET_MS:g} ms budget")
    return 0 if worst < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
