"""The command line as a user runs it: `up --demo`, publish, webhooks, jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from webhook_router.cli import parser
from webhook_router.settings import Settings

from ..conftest import drop_namespace, eventually, free_port
from ..support.processes import env_of
from .conftest import Stack, event_for

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
SAMPLES = Path(__file__).parent.parent / "samples"


async def cli(settings: Settings, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI as a user does: these settings, and no log level set."""
    env = env_of(settings)
    del env["WEBHOOK_ROUTER_LOG_LEVEL"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        *args,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_up_demo_shows_complete_jobs_with_run_numbers(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "namespace": f"wrtest_{uuid.uuid4().hex[:8]}",
            "default_space": f"demo-{uuid.uuid4().hex[:6]}",
            "engine_url": f"http://127.0.0.1:{free_port()}",
            "api_port": free_port(),
            "api_token": [],
        }
    )
    env = env_of(own)
    del env["WEBHOOK_ROUTER_API_TOKEN"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        "up",
        "--demo",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        printed = []
        while not any("Demo:" in line for line in printed):
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, "up --demo ended early: " + "".join(printed)
            printed.append(line.decode())
        assert printed[0].startswith("API token (generated")
        jobs: list[dict[str, Any]] = []
        for _ in range(100):
            code, out, err = await cli(own, "jobs", "list", "--json")
            assert code == 0, err
            jobs = json.loads(out)["webhookJobs"]
            if len(jobs) == 5 and all(j["status"] == "Complete" for j in jobs):
                break
            await asyncio.sleep(0.2)
        assert len(jobs) == 5
        assert all(j["status"] == "Complete" and j["runId"] for j in jobs), jobs
        assert {j["treeGroup"] for j in jobs} >= {
            "Users",
            "Teams",
            "Submissions > services > ipad-request",
        }
        code, out, _ = await cli(own, "jobs", "list")
        assert "Complete" in out and "200 OK" in out
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await drop_namespace(own.amqp_url[0], own.namespace, schedule=own.schedule)


async def test_publish_a_sample_file_then_read_its_job(stack: Stack) -> None:
    space = stack.space()
    s = stack.settings.model_copy(update={"default_space": space})
    code, out, err = await cli(s, "webhooks", "install-defaults")
    assert code == 0, err
    assert out.startswith("created 21 webhooks")
    code, out, _ = await cli(s, "webhooks", "install-defaults")
    assert out.strip() == "created 0 webhooks"
    await stack.synced()

    sample = json.loads((SAMPLES / "user.created.json").read_text())
    sample["space"]["slug"] = space
    del sample["event"]["id"]
    code, out, err = await cli(s, "publish", "-", stdin=json.dumps(sample).encode())
    assert code == 0, err
    event_id = out.strip()
    [job] = await stack.settled(space, 1)
    assert job["event_id"] == event_id
    code, out, err = await cli(s, "jobs", "show", str(job["id"]))
    assert code == 0, err
    assert "status:       Complete" in out
    assert f'"id": "{event_id}"' in out  # the request, pretty-printed
    assert "Initiated run #" in out
    code, out, _ = await cli(s, "jobs", "list", "--status", "complete", "--json")
    assert [j["id"] for j in json.loads(out)["webhookJobs"]] == [str(job["id"])]


async def test_one_shot_commands_print_their_answer_and_no_log_line(stack: Stack) -> None:
    sample = json.loads((SAMPLES / "user.created.json").read_text())
    sample["space"]["slug"] = stack.space()
    sample["event"]["id"] = str(uuid.uuid4())
    code, out, err = await cli(stack.settings, "publish", "-", stdin=json.dumps(sample).encode())
    assert code == 0, err
    assert err == "", "publishing connects to the broker, and says nothing of it"
    assert out.strip() == sample["event"]["id"]
    code, out, err = await cli(stack.settings, "jobs", "list", "--space", stack.space())
    assert (code, err) == (0, "")
    # Asked for, the progress is there.
    env = env_of(stack.settings) | {"WEBHOOK_ROUTER_LOG_LEVEL": "info"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webhook_router.cli",
        "publish",
        "-",
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sample["event"]["id"] = str(uuid.uuid4())
    _, logged = await asyncio.wait_for(process.communicate(json.dumps(sample).encode()), 60)
    assert process.returncode == 0
    assert "broker connected" in logged.decode()


async def test_publish_speaks_of_fields_in_plain_words(stack: Stack) -> None:
    code, _, err = await cli(
        stack.settings,
        "publish",
        "-",
        stdin=b'{"event": {"type": "User", "action": "Created", "id": 7}, "space": "acme",'
        b' "user": {}}',
    )
    assert code == 2
    assert err.splitlines() == [
        "event.id: must be a string",
        "space: must be an object",
        "webhook-router: the event is not valid; nothing was published",
    ]


async def test_publish_refuses_a_bad_event_and_names_the_field(stack: Stack) -> None:
    code, _, err = await cli(
        stack.settings,
        "publish",
        "-",
        stdin=b'{"event": {"type": "Submission", "action": "Submitted"}, "space": {"slug": "a"}}',
    )
    assert code == 2
    assert "needs kapp, form, submission" in err
    assert "nothing was published" in err


async def test_webhook_create_refuses_a_bad_filter_naming_the_position(stack: Stack) -> None:
    space = stack.space()
    code, _, err = await cli(
        stack.settings,
        "webhooks",
        "create",
        "--space",
        space,
        "--kapp",
        "services",
        "--name",
        "bad",
        "--type",
        "Submission",
        "--event",
        "Submitted",
        "--url",
        "/x",
        "--filter",
        "values('Status') == 'Open' &&",
    )
    assert code == 2
    assert "filter: at position 29: expected an expression but found end of text" in err
    code, out, _ = await cli(
        stack.settings, "webhooks", "list", "--space", space, "--kapp", "services", "--json"
    )
    assert json.loads(out) == {"webhooks": []}


async def test_webhook_create_refuses_a_url_that_cannot_be_sent_and_warns_of_a_refused_host(
    stack: Stack,
) -> None:
    space = stack.space()
    create = ("webhooks", "create", "--space", space, "--type", "User", "--event", "Created")
    code, out, err = await cli(stack.settings, *create, "--name", "rel", "--url", "example/path")
    assert code == 2, out
    assert err.splitlines() == [
        "url: must start with '/' (a path on the workflow engine) or be an http:// or "
        "https:// URL, not 'example/path'",
        "webhook-router: the webhook is not valid; nothing was saved",
    ]
    assert await stack.store.scope_webhooks(space, None) == []

    url = "http://localhost:9/hook"
    newcomer = stack.settings.model_copy(update={"allowed_networks": []})
    code, out, err = await cli(newcomer, *create, "--name", "local", "--url", url)
    assert code == 0, err
    assert json.loads(out)["webhook"]["url"] == url
    assert err.splitlines() == [
        "webhook-router: warning: every delivery will be refused: 127.0.0.1 is a loopback "
        "address (host localhost); add its network to WEBHOOK_ROUTER_ALLOWED_NETWORKS if the "
        "router may reach it"
    ]
    code, _, err = await cli(
        stack.settings, "webhooks", "update", "--space", space, "local", "--url", "/hook"
    )
    assert (code, err) == (0, "")


async def test_webhooks_create_update_show_delete(stack: Stack) -> None:
    space = stack.space()
    base = ("--space", space)
    code, out, err = await cli(
        stack.settings,
        "webhooks",
        "create",
        *base,
        "--name",
        "Users",
        "--type",
        "User",
        "--event",
        "Created",
        "--url",
        "/u",
        "--auth-strategy",
        "Signature",
    )
    assert code == 0, err
    created = json.loads(out)["webhook"]
    assert created["secret"].startswith("whsec_")
    code, out, err = await cli(
        stack.settings, "webhooks", "update", *base, "Users", "--url", "/v", "--disable"
    )
    assert code == 0, err
    assert json.loads(out)["webhook"]["url"] == "/v"
    assert json.loads(out)["webhook"]["enabled"] is False
    code, out, _ = await cli(stack.settings, "webhooks", "list", *base)
    assert "Users" in out and "/v" in out
    code, out, _ = await cli(stack.settings, "webhooks", "delete", *base, "Users")
    assert code == 0
    code, _, err = await cli(stack.settings, "webhooks", "show", *base, "Users")
    assert code == 1 and "no webhook named 'Users'" in err


async def users_created(stack: Stack, space: str, count: int, url: str = "/u") -> list[str]:
    """`count` jobs of a webhook of its own in `space`, settled; their ids, newest first."""
    await stack.webhook(space, type="User", event="Created", url=url)
    for n in range(count):
        await stack.publisher.publish(event_for(space, "User", "Created", user={"username": n}))
    rows = await stack.settled(space, count)
    ordered = sorted(rows, key=lambda r: (r["scheduled_at"], str(r["id"])), reverse=True)
    return [str(r["id"]) for r in ordered]


async def test_jobs_list_says_there_is_more_and_how_to_get_it(stack: Stack) -> None:
    space = stack.space()
    ids = await users_created(stack, space, 3)
    code, out, err = await cli(stack.settings, "jobs", "list", "--space", space, "--limit", "2")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ids[:2]
    [hint] = err.splitlines()
    assert hint.startswith("webhook-router: more jobs than these 2; for the next page, run the ")
    token = hint.split("--page-token ")[1]
    code, out, err = await cli(
        stack.settings, "jobs", "list", "--space", space, "--limit", "2", "--page-token", token
    )
    assert (code, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ids[2:]

    code, out, _ = await cli(
        stack.settings, "jobs", "list", "--space", space, "--limit", "2", "--json"
    )
    page = json.loads(out)
    assert [j["id"] for j in page["webhookJobs"]] == ids[:2] and page["nextPageToken"] == token
    code, out, _ = await cli(
        stack.settings, "jobs", "list", "--space", space, "--json", "--page-token", token
    )
    last = json.loads(out)
    assert [j["id"] for j in last["webhookJobs"]] == ids[2:] and last["nextPageToken"] is None

    code, _, err = await cli(stack.settings, "jobs", "list", "--page-token", "nope")
    assert code == 2 and "--page-token is not a token this API gave: 'nope'" in err
    code, _, err = await cli(stack.settings, "jobs", "list", "--limit", "0")
    assert code == 2 and "--limit must be an integer from 1 to 1000: '0'" in err


async def test_jobs_list_reads_its_options_as_the_api_reads_its_query(stack: Stack) -> None:
    """The CLI's filters go through the API's query model: the same refusals, each naming
    the option, all of them at once."""
    code, _, err = await cli(
        stack.settings, "jobs", "list", "--status", "done", "--start", "yesterday"
    )
    assert code == 2
    assert "--status " in err and ": 'done'" in err
    assert "--start " in err and ": 'yesterday'" in err
    code, _, err = await cli(stack.settings, "jobs", "list", "--parent-type", "Submission")
    assert code == 2 and "--parent-type and --parent-key go together" in err
    code, _, err = await cli(
        stack.settings, "jobs", "list", "--parent-type", "Nope", "--parent-key", "x"
    )
    assert code == 2 and "--parent-type must be a catalogue type: 'Nope'" in err


async def test_jobs_show_labels_and_counts_attempts_as_the_console_does(stack: Stack) -> None:
    space = stack.space()
    [job_id] = await users_created(stack, space, 1, url="/nowhere")  # the engine answers 404
    for replay in (1, 2):
        code, out, err = await cli(stack.settings, "jobs", "retry", job_id)
        assert code == 0, err

        async def failed_again(replay: int = replay) -> bool:
            job = await stack.store.get_job(job_id)
            return job is not None and (job.replay, job.status) == (replay, "Failed")

        assert await eventually(failed_again, timeout=20)
    code, out, err = await cli(stack.settings, "jobs", "show", job_id)
    assert (code, err) == (0, "")
    labels = [line.split(" at ")[0] for line in out.splitlines() if line.startswith("attempt ")]
    assert labels == ["attempt 1", "attempt 1 (retry 1)", "attempt 1 (retry 2)"]
    [count] = [line for line in out.splitlines() if line.startswith("attempts:")]
    assert count.split(None, 1)[1] == (
        "3 (1 since an admin last sent it again; sent again 2 times)"
    )


async def test_a_webhook_not_found_says_where_one_of_that_name_is(stack: Stack) -> None:
    space = stack.space()
    await stack.webhook(
        space, kapp="services", name="Intake", type="Submission", event="Submitted", url="/i"
    )
    update = ("webhooks", "update", "--space", space)
    code, _, err = await cli(stack.settings, *update, "Intake", "--url", "/j")
    assert code == 1
    assert err.strip() == (
        f"webhook-router: no webhook named 'Intake' in space {space}; it is a kapp webhook: "
        "add --kapp services"
    )
    await stack.webhook(space, kapp="hr", name="Intake", type="Form", event="Created", url="/i")
    code, _, err = await cli(stack.settings, "webhooks", "show", "--space", space, "Intake")
    assert code == 1 and err.strip().endswith("add --kapp one of hr, services")
    await stack.webhook(space, name="Joined", type="User", event="Created", url="/u")
    code, _, err = await cli(stack.settings, *update, "--kapp", "hr", "Joined", "--disable")
    assert code == 1 and err.strip() == (
        f"webhook-router: no webhook named 'Joined' in kapp hr of space {space}; space "
        f"{space} has one itself: leave out --kapp"
    )
    code, _, err = await cli(stack.settings, "webhooks", "delete", "--space", space, "Nobody")
    assert code == 1 and err.strip().endswith(f"in space {space}, nor in any of its kapps")
    code, out, err = await cli(
        stack.settings, *update, "--kapp", "services", "Intake", "--url", "/j"
    )
    assert code == 0 and json.loads(out)["webhook"]["url"] == "/j", err


async def test_a_job_is_found_by_a_prefix_of_its_id_no_other_job_has(stack: Stack) -> None:
    space = stack.space()
    [job_id] = await users_created(stack, space, 1)
    # the shortest prefix of at least 4 characters that no other job of the shared job log has
    # (other tests' jobs are there too, and 4 hex digits alone collide by chance)
    every = await stack.store.pool.fetchval("SELECT array_agg(id) FROM webhook_jobs")
    ids = [str(i) for i in every]
    size = next(n for n in range(4, 37) if sum(i.startswith(job_id[:n]) for i in ids) == 1)
    code, out, err = await cli(stack.settings, "jobs", "show", job_id[:size], "--json")
    assert code == 0, err
    assert json.loads(out)["webhookJob"]["id"] == job_id
    # A second job whose id differs only in its 15th character: a copy of the row, new id.
    # Only the two of them start with the prefix above (no other job shares it).
    assert size <= 14, "a prefix this long that no other job has is shared by the twin below"
    twin = job_id[:14] + ("0" if job_id[14] != "0" else "1") + job_id[15:]
    await stack.store.pool.execute(
        "INSERT INTO webhook_jobs SELECT (jsonb_populate_record(j, jsonb_build_object("
        "'id', $2::text))).* FROM webhook_jobs j WHERE id = $1",
        uuid.UUID(job_id),
        twin,
    )
    code, _, err = await cli(stack.settings, "jobs", "show", job_id[:size])
    assert code == 2
    assert err.strip() == (
        f"webhook-router: 2 job ids start with '{job_id[:size]}': "
        f"{', '.join(sorted([job_id, twin]))}; give more of the id"
    )
    code, out, err = await cli(stack.settings, "jobs", "show", job_id[:16], "--json")
    assert code == 0 and json.loads(out)["webhookJob"]["id"] == job_id, err
    code, _, err = await cli(stack.settings, "jobs", "retry", job_id[:size])
    assert code == 2 and "give more of the id" in err, "nothing is retried on a guess"
    for bad in ("17d", "xyz-1234", job_id + "0"):
        code, _, err = await cli(stack.settings, "jobs", "show", bad)
        assert code == 2 and "is not a job id, nor its first 4 or more hex digits" in err
    code, _, err = await cli(stack.settings, "jobs", "show", "0000000f")
    assert code == 1 and "no webhook job's id starts with '0000000f'" in err


async def test_every_argument_of_every_command_says_what_it_is() -> None:
    def unexplained(p: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found += unexplained(child, f"{path} {name}")
            elif not action.help and not isinstance(
                action, argparse._HelpAction | argparse._VersionAction
            ):
                found.append(f"{path} {action.option_strings or action.dest}")
        return found

    assert unexplained(parser(), "webhook-router") == []


async def test_every_command_has_help(settings: Settings) -> None:
    commands = [
        [],
        ["up"],
        ["router"],
        ["worker"],
        ["recorder"],
        ["api"],
        ["migrate"],
        ["publish"],
        ["engine"],
        ["demo"],
        ["webhooks"],
        ["webhooks", "create"],
        ["webhooks", "install-defaults"],
        ["jobs"],
        ["jobs", "list"],
        ["jobs", "retry"],
        ["jobs", "replay"],
    ]
    for command in commands:
        code, out, _ = await cli(settings, *command, "--help")
        assert code == 0
        assert "usage: webhook-router" in out


async def test_prune_keeps_what_is_recent(stack: Stack) -> None:
    code, out, err = await cli(stack.settings, "prune", "--older-than", "90d")
    assert code == 0, err
    assert out.strip() == "nothing to drop"
    code, _, err = await cli(stack.settings, "prune", "--older-than", "soon")
    assert code == 2
    assert "not a duration" in err


async def test_webhooks_rate_limit_and_why_one_was_disabled(stack: Stack) -> None:
    space = stack.space()
    base = ("--space", space)
    hook = await stack.webhook(space, name="crm", type="User", event="Created", url="/u")
    code, out, err = await cli(
        stack.settings, "webhooks", "update", *base, "crm", "--rate-limit", "2.5"
    )
    assert code == 0, err
    assert json.loads(out)["webhook"]["rateLimit"] == 2.5
    code, _, err = await cli(
        stack.settings, "webhooks", "update", *base, "crm", "--rate-limit", "0"
    )
    assert code != 0 and "rateLimit" in err and "above 0" in err
    await stack.store.disable_webhook(hook.id, "410 Gone")
    code, out, _ = await cli(stack.settings, "webhooks", "list", *base)
    assert "no: 410 Gone" in out and "2.5/s" in out
    code, out, err = await cli(
        stack.settings, "webhooks", "update", *base, "crm", "--enable", "--no-rate-limit"
    )
    assert code == 0, err
    shown = json.loads(out)["webhook"]
    assert (shown["enabled"], shown["disabledReason"], shown["rateLimit"]) == (True, None, None)
