"""The OpenAPI document is true to the API: same routes, and schemathesis fuzzes every
operation of the live API without a server error or an answer outside the document."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

from webhook_router.api import Api, is_console
from webhook_router.openapi import OPENAPI_PATH, OPERATIONS, PUBLIC_PATHS
from webhook_router.store import JobFilter

from ..conftest import eventually
from .conftest import Stack, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]

AUTH = {"Authorization": "Bearer test-token"}
MAX_EXAMPLES = 8
SEED = 20240501
CONFIG = {
    # Schema-valid definitions may still be refused on meaning (a kapp type on a space,
    # a filter that does not parse): 422 is a documented answer to positive data too.
    "checks": {
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "401", "404", "409", "422"],
        },
    },
}


async def test_the_document_lists_exactly_the_routes_the_api_serves(stack: Stack) -> None:
    status, doc = await stack.api("GET", OPENAPI_PATH, token=None)
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    app = Api(stack.settings, stack.store).app()
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not is_console(route.resource.canonical)
    }
    assert documented == served
    assert len(documented) == len(OPERATIONS) == 52
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    public = {
        path
        for path, item in doc["paths"].items()
        for op in item.values()
        if op.get("security") == []
    }
    assert public == set(PUBLIC_PATHS) == {"/healthz", "/readyz", OPENAPI_PATH}


async def test_the_document_is_a_valid_openapi_document(stack: Stack) -> None:
    def load() -> int:
        schema = schemathesis.openapi.from_url(
            stack.api_url + OPENAPI_PATH,
            config=schemathesis.Config.from_dict(CONFIG),
            timeout=10,
        )
        schema.validate()
        return len([result.ok() for result in schema.get_all_operations()])

    # schemathesis leaves out the operation that serves the document itself
    assert await asyncio.to_thread(load) == len(OPERATIONS) - 1


def harmless(case: Any, fuzz_space: str) -> None:
    """Keep what the fuzz makes inert: webhooks it creates or changes stay disabled (so
    nothing is ever delivered to a URL it made up), and events it publishes go to a space
    of their own with no webhook in it."""
    body = case.body
    if not isinstance(body, dict):
        return
    path, method = case.operation.path, case.operation.method.upper()
    if method in ("POST", "PUT") and (path.endswith("/webhooks") or path.endswith("/{name}")):
        for target in (body, body.get("webhook")):
            if isinstance(target, dict) and target.get("enabled", True) is True:
                target["enabled"] = False
    if path.endswith("/events"):
        space = body.get("space")
        if isinstance(space, dict) and isinstance(space.get("slug"), str) and space["slug"]:
            space["slug"] = fuzz_space


@dataclass(frozen=True)
class Targets:
    """Things that exist in one space, so that fuzzed requests also reach the code past
    "not found": a webhook named `name` in the space and in kapp `kapp` (disabled), and a
    Failed job of each level, of other webhooks (disabled, unknown to the fuzz, sending only
    to the local engine)."""

    space: str
    kapp: str
    name: str
    space_job: str
    kapp_job: str

    def path_parameters(self, path: str) -> dict[str, str]:
        values = {
            "space": self.space,
            "kapp": self.kapp,
            "name": self.name,
            "id": self.kapp_job if "{kapp}" in path else self.space_job,
        }
        return {key: value for key, value in values.items() if "{" + key + "}" in path}

    def hook(self, path: str) -> tuple[str, dict[str, Any]]:
        """Where to create the target webhook for an operation on `path`, and its body."""
        base = path.split("/webhooks/")[0].format(space=self.space, kapp=self.kapp)
        kind = ("Submission", "Submitted") if "{kapp}" in path else ("User", "Created")
        body = {"name": self.name, "type": kind[0], "event": kind[1], "url": "/nowhere"}
        return base + "/webhooks", body | {"enabled": False}


async def make_targets(stack: Stack, space: str) -> Targets:
    kapp = "fuzz-kapp"
    name = f"fuzz target {uuid.uuid4().hex[:6]}/x"
    jobs = f"fuzz-jobs-{uuid.uuid4().hex[:6]}"
    hooks = [
        await stack.webhook(space, name=jobs, type="User", event="Created", url="/nowhere"),
        await stack.webhook(
            space, kapp=kapp, name=jobs, type="Submission", event="Submitted", url="/nowhere"
        ),
    ]
    await stack.publisher.publish(event_for(space, "User", "Created", user={"username": "f"}))
    await stack.publisher.publish(
        event_for(
            space,
            "Submission",
            "Submitted",
            kapp={"slug": kapp},
            form={"slug": "f"},
            submission={"id": "f-1", "values": {}},
        )
    )

    async def failed() -> list[Any]:
        rows = await stack.store.list_jobs(JobFilter(space=space, webhook=jobs, status="Failed"))
        return rows if len(rows) == 2 else []

    rows = await eventually(failed, timeout=20)
    assert len(rows) == 2
    for hook in hooks:
        assert await stack.store.update_webhook(replace(hook, enabled=False)) is not None
    by_scope = {row.scope_type: str(row.id) for row in rows}
    return Targets(space, kapp, name, by_scope["Space"], by_scope["Kapp"])


def fuzz_operation(
    session: requests.Session,
    api_url: str,
    fuzz_space: str,
    strategy: Any,
    aim: Targets | None,
    statuses: Counter[tuple[str, int]],
) -> None:
    """Send MAX_EXAMPLES cases of `strategy`; raises on the first failed check."""

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        harmless(case, fuzz_space)
        path = case.operation.path
        if aim is not None and "{name}" in path:
            where, body = aim.hook(path)
            made = session.post(api_url + where, json=body, timeout=10)
            assert made.status_code in (201, 409), made.text
        response = case.call_and_validate(
            base_url=api_url, session=session, headers=AUTH, timeout=10
        )
        statuses[(case.operation.label, response.status_code)] += 1

    run()


def describe(exc: BaseException) -> str:
    """The failure with what it groups (schemathesis groups failed checks)."""
    if isinstance(exc, BaseExceptionGroup):
        return f"{exc}\n" + "\n".join(describe(inner) for inner in exc.exceptions)
    return str(exc)


def fuzz(
    api_url: str, fuzz_space: str, targets: dict[str, Targets]
) -> tuple[Counter[tuple[str, int]], list[str]]:
    """Every operation with positive and negative data, at random and (for operations on
    a space, kapp, webhook or job) aimed at the targets; (answers by operation and status,
    failures)."""
    schema = schemathesis.openapi.from_url(
        api_url + OPENAPI_PATH, config=schemathesis.Config.from_dict(CONFIG), timeout=10
    )
    failures: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    with requests.Session() as session:
        session.headers.update(AUTH)
        for result in schema.get_all_operations():
            operation = result.ok()
            path = operation.path
            aims: list[Targets | None] = [None]
            if any("{" + key + "}" in path for key in ("space", "kapp", "name", "id")):
                aims.append(targets["space" if "{space}" in path else "default"])
            for aim, mode in itertools.product(aims, GenerationMode):
                strategy = operation.as_strategy(
                    generation_mode=mode,
                    headers=AUTH,
                    path_parameters=aim.path_parameters(path) if aim is not None else None,
                )
                try:
                    fuzz_operation(session, api_url, fuzz_space, strategy, aim, statuses)
                except hypothesis.errors.Unsatisfiable:
                    # nothing to make invalid: no parameter, no body
                    assert mode is GenerationMode.NEGATIVE
                except Exception as exc:
                    aimed = "random" if aim is None else "at targets"
                    failures.append(f"{operation.label} [{mode.value}, {aimed}]: {describe(exc)}")
    return statuses, failures


# Hypothesis draws cases in the fuzz thread while the stack runs in the event loop's; the
# stack's own use of the `random` module then looks to Hypothesis like a strategy's.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    stack: Stack,
) -> None:
    before = {w.id for w in await stack.store.all_webhooks()}
    fuzz_space = f"fuzz-{uuid.uuid4().hex[:8]}"
    try:
        targets = {
            "default": await make_targets(stack, stack.settings.default_space),
            "space": await make_targets(stack, stack.space()),
        }
        statuses, failures = await asyncio.to_thread(fuzz, stack.api_url, fuzz_space, targets)
    finally:
        for webhook in await stack.store.all_webhooks():
            if webhook.id not in before:
                await stack.store.delete_webhook(webhook.id)
    assert not failures, "\n\n".join(failures)
    answered = {(label.split(" ")[0], status) for (label, status), _ in statuses.items()}
    # the fuzz got past validation to every kind of success
    assert {("GET", 200), ("POST", 200), ("POST", 201), ("PUT", 200), ("DELETE", 200)} <= answered
    assert await stack.jobs(fuzz_space) == []
