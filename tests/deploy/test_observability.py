"""The dashboard, the alert rules and the Prometheus of the `observability` compose profile,
checked without Prometheus or Grafana running.

Always: every metric name in the dashboard's and the rules' expressions is one the code
exports (read from the registry in webhook_router.metrics, with the suffixes each kind of
metric gets), the dashboard shows what ops need through the provisioned data source, and the
scrape targets are the compose services on the ports their health checks probe. With
`promtool` (on PATH, or named by $PROMTOOL; Debian's `prometheus` package ships it):
`promtool check rules`, `promtool test rules` on deploy/prometheus/alerts_test.yml,
`promtool check config`, and every dashboard expression parsed by promtool as a rule.
The PrometheusRule twin of the rules is checked in test_manifests.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook_router import metrics
from webhook_router.settings import Settings

from .test_compose import compose

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = GRAFANA / "dashboards" / "webhook-router.json"

# Series Prometheus itself makes for every target; the code cannot export them.
PROMETHEUS_SERIES = {"up"}

# What each kind of metric family is exposed as by prometheus_client.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exported() -> set[str]:
    """Every series name the code's registry exposes, labelled or not yet."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


# PromQL, enough of it to find the metric names

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
    "deriv", "end", "exp", "floor", "group", "histogram_quantile", "holt_winters", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log2",
    "log10", "max", "max_over_time", "min", "min_over_time", "predict_linear", "quantile",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
    "sqrt", "start", "stddev", "stddev_over_time", "stdvar", "sum", "sum_over_time", "time",
    "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# clauses whose parenthesised list holds label names, not metrics
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
TOKEN = re.compile(
    r"(?P<number>(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)(?![\w:]))"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


class PromQLError(ValueError):
    pass


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads. Strings, label matchers, ranges, label lists
    of by/without/on/ignoring/group_* and Grafana's $variables are not names; a name called
    as a function must be a PromQL function, so a typo there fails too."""
    text = STRINGS.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers (strings already emptied)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(r"\boffset\s+-?(?:\d+[a-z]+)+", " ", text, flags=re.I)  # offset 1h30m
    text = LABEL_LISTS.sub(" ", text)
    found: set[str] = set()
    for match in TOKEN.finditer(text):
        name = match.group("name")
        if name is None:
            continue
        if match.group("call"):
            if name not in FUNCTIONS:
                raise PromQLError(f"unknown function {name!r} in {expr!r}")
        elif name.lower() not in KEYWORDS:
            found.add(name)
    return found


def test_the_parser_finds_the_metric_names_and_nothing_else() -> None:
    assert metric_names(
        'sum by (le, role) (rate(a_bucket{queue=~".+\\\\.retry\\\\..+", x!="up"}[5m]))'
    ) == {"a_bucket"}
    assert metric_names("up{job='x'} == 0 unless on (instance) group_left (role) b offset 5m") == {
        "up",
        "b",
    }
    assert metric_names("deriv(sum(c)[15m:1m]) > 1e3 and d > bool 0.5") == {"c", "d"}
    assert metric_names("rate(e_total[$__rate_interval]) * 60 / ignoring(x) f:g") == {
        "e_total",
        "f:g",
    }
    assert metric_names('label_replace(h, "dst", "$1", "src", "(.*)")') == {"h"}
    assert metric_names("histogram_quantile(0.9, sum without (pod) (i))") == {"i"}
    with pytest.raises(PromQLError, match="rat"):
        metric_names("rat(e_total[5m])")


# the expressions


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def all_exprs() -> Iterator[tuple[str, str]]:
    for expr in dashboard_exprs():
        yield "dashboard", expr
    for rule in rules():
        yield rule["alert"], rule["expr"]


def unknown_names(exprs: Iterator[tuple[str, str]]) -> dict[str, set[str]]:
    """Names the code does not export, by where they are used."""
    known = exported() | PROMETHEUS_SERIES
    unknown: dict[str, set[str]] = {}
    for where, expr in exprs:
        names = metric_names(expr) - known
        if names:
            unknown.setdefault(where, set()).update(names)
    return unknown


def test_every_metric_in_the_dashboard_and_the_alerts_is_one_the_code_exports() -> None:
    assert unknown_names(all_exprs()) == {}
    used = {name for _, expr in all_exprs() for name in metric_names(expr)}
    assert len(used) >= 10


def test_the_alerts_unit_tests_feed_series_the_code_exports() -> None:
    """So that a passing `promtool test rules` is about the series the roles really serve."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    series = [s["series"] for t in tests["tests"] for s in t["input_series"]]
    assert unknown_names(iter(("alerts_test.yml", s) for s in series)) == {}
    assert len(series) >= 10


def test_the_check_rejects_names_the_code_does_not_export() -> None:
    """A counter without _total, a histogram read as a counter, a misspelt gauge."""
    wrong = [
        ("a", "rate(webhook_router_deliveries[5m])"),
        ("b", "rate(webhook_router_delivery_seconds_total[5m])"),
        ("c", "webhook_router_queue_message > 0"),
        ("d", "sum(rate(webhook_router_deliveries_total[5m])) / ignoring(x) webhook_router_x"),
        ("d", "webhook_router_queue_messages > 0"),
    ]
    assert unknown_names(iter(wrong)) == {
        "a": {"webhook_router_deliveries"},
        "b": {"webhook_router_delivery_seconds_total"},
        "c": {"webhook_router_queue_message"},
        "d": {"webhook_router_x"},
    }
    # one wrong name among many good ones in the same place is still found
    dashboard_with_a_typo = [("dashboard", e) for e in dashboard_exprs()]
    dashboard_with_a_typo.insert(0, ("dashboard", "rate(webhook_router_retrys_total[5m])"))
    assert unknown_names(iter(dashboard_with_a_typo)) == {
        "dashboard": {"webhook_router_retrys_total"}
    }
    assert {"webhook_router_delivery_seconds_bucket", "webhook_router_deliveries_total"} <= (
        exported()
    )


# the dashboard


# what ops open the dashboard for: a panel whose title says it, reading the metric that shows it
NEEDED = {
    "deliveries per minute": "webhook_router_deliveries_total",
    "failures per minute": "webhook_router_deliveries_total",
    "delivery time percentiles": "webhook_router_delivery_seconds_bucket",
    "queue depths per role": "webhook_router_queue_messages",
    "retry backlog": "webhook_router_queue_messages",
    "dead letters": "webhook_router_dead_letters_total",
    "recorder lag": "webhook_router_recorder_lag_seconds_bucket",
}


def test_the_dashboard_shows_what_ops_open_it_for() -> None:
    for needed, metric in NEEDED.items():
        (panel,) = (p for p in panels() if needed in p["title"].lower())
        read = {name for t in panel["targets"] for name in metric_names(t["expr"])}
        assert metric in read, needed
    (depths,) = (p for p in panels() if "queue depths per role" in p["title"].lower())
    assert [t["legendFormat"].split()[0] for t in depths["targets"]] == [
        "router",
        "worker",
        "recorder",
    ]
    (retries,) = (p for p in panels() if "retry backlog" in p["title"].lower())
    assert "retry" in retries["targets"][0]["expr"]
    (lag,) = (p for p in panels() if "recorder lag" in p["title"].lower())
    assert lag["fieldConfig"]["defaults"]["unit"] == "s"


def test_the_dashboard_reads_the_provisioned_prometheus() -> None:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    wanted = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels():
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


def test_the_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "webhook-router.yml").read_text()
    )["providers"]
    grafana = compose("observability")["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for kind in ("datasources", "dashboards"):
        source = f"./deploy/grafana/provisioning/{kind}"
        assert mounts[source] == f"/etc/grafana/provisioning/{kind}"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# Prometheus in compose


def scrape_config() -> dict[str, Any]:
    return dict(yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text()))


def test_prometheus_scrapes_the_api_and_every_role_where_compose_serves_them() -> None:
    (job,) = scrape_config()["scrape_configs"]
    assert job["job_name"] == "webhook-router", "the alerts select job=webhook-router"
    targets = {t: c["labels"]["role"] for c in job["static_configs"] for t in c["targets"]}
    expected = {}
    for name, service in compose().items():
        command = service.get("command", [])
        if "--health-port" in command:
            port = command[command.index("--health-port") + 1]
            expected[f"{name}:{port}"] = command[0]
            # the health server listens beyond the container's loopback
            assert service["environment"]["WEBHOOK_ROUTER_API_HOST"] == "0.0.0.0", name
    api = compose()["api"]
    expected[f"api:{Settings().api_port}"] = "api"
    assert targets == expected
    assert job["authorization"]["credentials"] == api["environment"]["WEBHOOK_ROUTER_API_TOKEN"]


def test_prometheus_evaluates_the_alerts_where_compose_mounts_them() -> None:
    volumes = compose("observability")["prometheus"]["volumes"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in volumes)
    assert scrape_config()["rule_files"] == [mounts["./deploy/prometheus/alerts.yml"]]
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


# promtool


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool not installed (Debian package `prometheus`, or set $PROMTOOL)")
    return found


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """So that a pass above means something: one unbalanced parenthesis fails."""
    broken = yaml.safe_load(ALERTS.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(webhook_router_dead_letters_total[5m])"
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(broken))
    assert run_promtool("check", "rules", str(path)).returncode != 0


def test_every_alert_fires_on_its_series_and_not_on_a_near_miss() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"]}
    assert tested == {r["alert"] for r in rules()}
    result = run_promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    config = scrape_config()
    config["rule_files"] = [str(ALERTS)]  # where compose mounts it, here
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """Each expression as a recording rule, Grafana's range variable given a value."""
    exprs = [e.replace("$__rate_interval", "2m") for e in dashboard_exprs()]
    group = {
        "name": "dashboard",
        "rules": [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
