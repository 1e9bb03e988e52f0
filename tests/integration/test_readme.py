"""The README stays true: every command in its code blocks is run or, where it cannot run
here, checked, in the order a newcomer meets them.

How each command is held:

- `webhook-router ...` (also as `.venv/bin/webhook-router`), `curl ...` and the Python
  publisher snippet: **run** against `webhook-router up --demo`, started by this test as
  `make run` starts it, on a database and a namespace of its own (so the space is `default`,
  as for a newcomer) and on free ports (8080 in a URL becomes the API's port). `JOB_ID` is
  the id of a Failed job the test makes first; `$TOKEN` is the token `up` printed.
- `make run` / `make test`: **planned** with `make -n` (running `make test` here would run
  the suite inside itself, and `make run` installs into .venv): `run` installs the package
  alone then runs `up --demo` (run for real above), `test` installs the `dev` extra.
- `docker compose ...`: **checked**, no Docker engine here: `up` needs the Compose file
  (validated in tests/deploy), `exec SERVICE webhook-router ARGS` needs that service and
  ARGS must parse with the CLI's own argparse parser.
- `bash .ci/run`: **run** as its dry run (`CI_DRY_RUN=1`), which must end in `make test`.
- The commands in the table of roles: **parsed** with the CLI's parser (they run until
  stopped); `prune` runs for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from webhook_router.cli import parser
from webhook_router.settings import Settings

from ..conftest import Services, drop_namespace, free_port
from ..support.processes import env_of

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SCRIPT = Path(sys.executable).parent / "webhook-router"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "webhook_router.cli"]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README, re.M | re.S)


def commands(block: str) -> list[list[str]]:
    """Each command of a shell block as its arguments (continuations joined, comments
    dropped), as the shell would split them."""
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]


def test_the_readme_says_what_python_it_needs_and_how_to_start() -> None:
    first_screen = README[: README.index("## How it works")]
    assert "Python >= 3.11" in first_screen
    assert re.search(r'requires-python = ">=3\.11"', (ROOT / "pyproject.toml").read_text())
    for needed in (
        "docker compose up",
        "make test",
        "make run",
        "http://127.0.0.1:8080/console/",
        "`change-me`",
        "port 8081",
    ):
        assert needed in first_screen, needed
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["api"]["environment"]["WEBHOOK_ROUTER_API_TOKEN"] == "change-me"
    assert Settings().engine_url.endswith(":8081")


def test_every_shell_command_is_one_this_test_knows_how_to_hold() -> None:
    known = {"docker", "make", "bash", "webhook-router", "curl"}
    for block in code_blocks("sh"):
        for argv in commands(block):
            assert argv[0] in known, argv
    assert len(code_blocks("python")) == 1
    assert len(code_blocks("console")) == 1


def make_plan(target: str) -> str:
    """What `make TARGET` would run, as a top-level make prints it (this suite itself runs
    under `make test`, whose MAKEFLAGS and MAKELEVEL would add "Entering directory" lines)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "VENV=/nonexistent/venv"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_make(argv: list[str]) -> None:
    assert argv[:1] == ["make"] and len(argv) == 2, argv
    plan = make_plan(argv[1])
    assert "sys.version_info < (3, 11)" in plan.splitlines()[0]  # says so before installing
    if argv[1] == "run":
        assert "/nonexistent/venv/bin/pip install --quiet -e .\n" in plan
        assert "[dev]" not in plan and "[test]" not in plan
        assert plan.rstrip().endswith("/nonexistent/venv/bin/webhook-router up --demo")
    elif argv[1] == "test":
        assert "/nonexistent/venv/bin/pip install --quiet -e '.[dev]'\n" in plan
        for step in ("ruff check", "ruff format --check", "mypy", "python -m pytest"):
            assert step in plan, step
    else:
        raise AssertionError(f"README names make {argv[1]}, which this test does not check")


def check_docker(argv: list[str]) -> None:
    assert argv[:2] == ["docker", "compose"], argv
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    if argv[2:] == ["up"]:
        assert "demo" in services
        return
    assert argv[2] == "exec", argv
    service, program, *args = argv[3:]
    assert service in services and program == "webhook-router", argv
    parser().parse_args(args)  # exits (SystemExit) when the arguments are wrong


def check_ci(argv: list[str]) -> None:
    assert argv == ["bash", ".ci/run"], argv
    result = subprocess.run(
        ["bash", ".ci/run"],
        cwd=ROOT,
        env=os.environ | {"CI_DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "+ make test"


def test_the_commands_that_cannot_run_here_are_planned_checked_or_dry_run() -> None:
    checked = 0
    for block in code_blocks("sh"):
        for argv in commands(block):
            if argv[0] == "make":
                check_make(argv)
            elif argv[0] == "docker":
                check_docker(argv)
            elif argv[0] == "bash":
                check_ci(argv)
            else:
                continue
            checked += 1
    assert checked == 5  # docker compose up, make test, docker compose exec, .ci/run, make run


def role_table() -> list[list[str]]:
    section = README[README.index("## Running the roles") : README.index("## Managing webhooks")]
    return [
        shlex.split(cmd) for cmd in re.findall(r"^\| `(webhook-router [^`]+)` \|", section, re.M)
    ]


def test_the_role_table_names_commands_the_cli_takes() -> None:
    table = role_table()
    assert [argv[1] for argv in table] == [
        "up",
        "router",
        "worker",
        "recorder",
        "api",
        "migrate",
        "prune",
        "engine",
        "demo",
    ]
    for argv in table:
        parser().parse_args(argv[1:])


def test_every_command_named_in_the_prose_parses() -> None:
    """`webhook-router ...` in running text, outside code blocks, parsed by the CLI."""
    prose = re.sub(r"^```.*?^```$", "", README, flags=re.M | re.S)
    named = re.findall(r"`(webhook-router [^`]+)`", prose)
    assert "webhook-router publish event.json" in named
    for command in named:
        parser().parse_args(shlex.split(command)[1:])


def column(header: str, row: str, name: str) -> str:
    """The cell of column `name` in a row of a `jobs list` table (columns are aligned)."""
    names = header.split()
    start = header.index(name)
    following = names.index(name) + 1
    end = header.index(names[following]) if following < len(names) else len(row)
    return row[start:end].strip()


@dataclass
class Demo:
    settings: Settings
    env: dict[str, str]
    token: str
    printed: list[str]

    async def run(self, argv: list[str], stdin: bytes | None = None) -> str:
        """Run one README command; its output, after checking it exited 0."""
        if argv[0] in ("webhook-router", ".venv/bin/webhook-router"):
            argv = [*CLI, *argv[1:]]
        elif argv[0] == "curl":
            argv = ["curl", "--silent", "--show-error", "--fail", *argv[1:]]
        argv = [
            a.replace("$TOKEN", self.token).replace(
                "http://127.0.0.1:8080", f"http://127.0.0.1:{self.settings.api_port}"
            )
            for a in argv
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        assert process.returncode == 0, f"{argv}: {err.decode()}"
        return out.decode()

    async def jobs(self) -> list[dict[str, Any]]:
        out = await self.run(["webhook-router", "jobs", "list", "--json", "--limit", "100"])
        return list(json.loads(out)["webhookJobs"])

    async def until(self, check: Any, what: str) -> Any:
        for _ in range(150):
            found = check(await self.jobs())
            if found:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {what} in {await self.jobs()}")


@asynccontextmanager
async def make_run(services: Services, settings: Settings) -> AsyncIterator[Demo]:
    """`webhook-router up --demo`, as `make run` starts it, on a database, a namespace and
    ports of its own, the space `default`; stopped, its database and namespace dropped."""
    name = f"wrtest_{uuid.uuid4().hex[:10]}"
    own = settings.model_copy(
        update={
            "namespace": name,
            "database_url": settings.database_url.rsplit("/", 1)[0] + "/" + name,
            "default_space": "default",
            "api_port": free_port(),
            "engine_url": f"http://127.0.0.1:{free_port()}",
            "api_token": [],
        }
    )
    env = env_of(own)
    del env["WEBHOOK_ROUTER_API_TOKEN"]
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "up",
        "--demo",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        while "Stop with Ctrl-C." not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "up --demo ended early: " + "\n".join(printed)
            printed.append(line.decode().rstrip("\n"))
        token = printed[0].rsplit(" ", 1)[1]
        yield Demo(own, env, token, printed)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drop_namespace(services.amqp_url, name)
        admin = await asyncpg.connect(services.admin_database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def a_failed_job(demo: Demo) -> str:
    """Test set-up, not from the README: a webhook whose engine path does not exist (the
    engine answers 404), and a User Created event for it; the id of its Failed job."""
    await demo.run(
        [
            "webhook-router",
            "webhooks",
            "create",
            "--name",
            "Nowhere",
            "--type",
            "User",
            "--event",
            "Created",
            "--url",
            "/nowhere",
        ]
    )
    event = {
        "event": {"type": "User", "action": "Created"},
        "space": {"slug": "default"},
        "user": {"username": "newcomer@example.com"},
    }
    for _ in range(20):  # until the router holds the new webhook
        await demo.run(["webhook-router", "publish", "-"], stdin=json.dumps(event).encode())
        await asyncio.sleep(0.3)
        failed = [
            j for j in await demo.jobs() if j["name"] == "Nowhere" and j["status"] == "Failed"
        ]
        if failed:
            assert failed[0]["summary"] == "404 Not Found"
            return str(failed[0]["id"])
    raise AssertionError("the Nowhere webhook never failed a job")


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(240)  # some twenty CLI processes: about 30 s on a busy machine
async def test_every_runnable_command_runs_right_after_make_run(
    services: Services, settings: Settings
) -> None:
    async with make_run(services, settings) as demo:
        # what `up --demo` prints: the token and the console
        assert f"http://127.0.0.1:{demo.settings.api_port}/console/" in "\n".join(demo.printed)
        demo_jobs = await demo.until(
            lambda jobs: len(jobs) == 5 and all(j["status"] == "Complete" for j in jobs) and jobs,
            "five Complete demo jobs",
        )

        # the console block: the command, and a table like the one shown
        [console] = code_blocks("console")
        command, header, *rows = console.splitlines()
        out = (await demo.run(shlex.split(command.removeprefix("$ ")))).splitlines()
        assert out[0].split() == header.split()
        shown = {(column(header, r, "STATUS"), column(header, r, "TREE")) for r in rows}
        got = {(column(out[0], r, "STATUS"), column(out[0], r, "TREE")) for r in out[1:]}
        assert got == shown
        assert {("Complete", j["treeGroup"] + " :: " + j["treeName"]) for j in demo_jobs} == shown

        # the publisher snippet, as written, with the settings of this demo
        [snippet] = code_blocks("python")
        published = await demo.run([sys.executable, "-c", snippet])
        # its last line is the id (before it, structlog's default logger may print the
        # connection to stdout: the snippet configures no logging)
        event_id = published.strip().splitlines()[-1]
        assert uuid.UUID(event_id)
        await demo.until(
            lambda jobs: [
                j for j in jobs if j["eventId"] == event_id and j["status"] == "Complete"
            ],
            f"Complete job for the snippet's event {event_id}",
        )

        # every webhook-router and curl command of the shell blocks, in order
        job_id = await a_failed_job(demo)
        ran = []
        for block in code_blocks("sh"):
            for argv in commands(block):
                if argv[0] not in ("webhook-router", "curl"):
                    continue
                argv = [a.replace("JOB_ID", job_id) for a in argv]
                ran.append((argv, await demo.run(argv)))
        assert len(ran) == 11
        outputs = {" ".join(argv[:3]): out for argv, out in ran}
        created = json.loads(outputs["webhook-router webhooks create"])["webhook"]
        assert (created["name"], created["enabled"]) == ("Onboarding Submitted", True)
        listed = outputs["webhook-router webhooks list"].splitlines()
        assert listed[1].split("  ")[:2] == ["Onboarding Submitted", "hr"], listed
        assert json.loads(outputs["webhook-router webhooks update"])["webhook"]["enabled"] is False
        assert outputs["webhook-router webhooks delete"].strip() == "deleted Onboarding Submitted"
        assert outputs["webhook-router jobs show"].startswith(f"id:           {job_id}")
        assert outputs["webhook-router jobs retry"].startswith(f"job {job_id} Queued -> ")
        assert outputs["webhook-router jobs replay"].strip().startswith("would queue ")
        assert json.loads(outputs["curl -H Authorization: Bearer $TOKEN"])["webhookJobs"]

        # the roles table's prune, for real
        [prune] = [argv for argv in role_table() if argv[1] == "prune"]
        assert (await demo.run(prune)).strip() == "nothing to drop"
