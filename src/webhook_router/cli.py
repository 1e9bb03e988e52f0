"""`webhook-router`: run the roles, migrate, publish, manage webhooks and read jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import string
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog

from webhook_router import __version__, broker, logs, store
from webhook_router.admin import REQUIRED, Admin, BrokerUnavailable, Conflict, NotFound
from webhook_router.credentials import AUTH_FIELDS, FILE_FIELDS
from webhook_router.events import EventInvalid
from webhook_router.models import (
    LIMIT_DEFAULT,
    LIMIT_MAX,
    InputInvalid,
    Job,
    JobDetail,
    Webhook,
    WebhookChange,
    WebhookWithSecret,
    decode_token,
    parse_status,
    parse_time,
)
from webhook_router.replay import ReplayResult
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.webhooks import Webhook as WebhookDefinition

log = structlog.get_logger(__name__)

T = TypeVar("T")
OWNER = {part: strategy for strategy, parts in AUTH_FIELDS.items() for part in parts}
"""The auth strategy each credential is for."""
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class CommandError(Exception):
    """A failure to report in one line and exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _json_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None


def _entry(text: str) -> tuple[str, str]:
    """`Name: value` (the value may be empty)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value' but found {text!r}")
    return name.strip(), value.strip()


def _file_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc}") from None


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


async def _ensure_database(settings: Settings) -> None:
    try:
        if await store.ensure_database(settings.database_url):
            log.info("database created", database=settings.database_url.rsplit("/", 1)[-1])
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"database unavailable: {exc}", EXIT_UNAVAILABLE) from None


async def _open_store(settings: Settings) -> Store:
    try:
        pool = await store.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"database unavailable: {exc}", EXIT_UNAVAILABLE) from None
    return Store(pool)


# running the roles

# (host, port, what sets it): a port a command is about to listen on
Listen = tuple[str | None, int, str]


def _engine_listen(settings: Settings) -> Listen:
    from urllib.parse import urlsplit

    url = urlsplit(settings.engine_url)
    return (
        url.hostname or "127.0.0.1",
        url.port or 80,
        f"the port of WEBHOOK_ROUTER_ENGINE_URL ({settings.engine_url})",
    )


def _listens(args: argparse.Namespace, settings: Settings, names: Sequence[str]) -> list[Listen]:
    listens: list[Listen] = []
    if "api" in names:
        listens.append((settings.api_host, settings.api_port, "WEBHOOK_ROUTER_API_PORT"))
    if getattr(args, "health_port", 0):
        listens.append((settings.api_host, args.health_port, "--health-port"))
    if getattr(args, "demo", False):
        listens.append(_engine_listen(settings))
    return listens


def _check_listens(listens: Sequence[Listen]) -> None:
    """Refuse to start, in one line naming the setting, when a port cannot be listened on."""
    from webhook_router.runtime import unbindable

    seen: dict[int, str] = {}
    for host, port, setting in listens:
        if port and port in seen:
            raise CommandError(
                f"port {port} is given twice, by {seen[port]} and by {setting}", EXIT_USAGE
            )
        seen[port] = setting
        error = unbindable(host, port)
        if error is not None:
            reason = error.strerror or str(error)
            raise CommandError(
                f"cannot listen on {host or '*'}:{port} ({reason}): change {setting}",
                EXIT_UNAVAILABLE,
            )


def _cli_command() -> str:
    """How the reader runs this CLI again: `webhook-router` when that is the one on PATH,
    else the path this process was started by."""
    started = sys.argv[0]
    if os.path.basename(started) != "webhook-router":
        return "webhook-router"
    found = shutil.which("webhook-router")
    if found is not None and os.path.realpath(found) == os.path.realpath(started):
        return "webhook-router"
    relative = os.path.relpath(started)
    return started if relative.startswith("..") else relative


async def _announce(roles: Sequence[Any], settings: Settings, generated: str | None) -> None:
    """Once every role is ready: where the console is and the token to log in with (a
    token from the environment is named, not printed: it may be a real one)."""
    from webhook_router.demo import api_base_url

    while not all(role.ready() for role in roles):
        await asyncio.sleep(0.1)
    api = api_base_url(settings)
    token = f"the API token {generated}" if generated else "a token from WEBHOOK_ROUTER_API_TOKEN"
    print(
        f"\nwebhook-router is up.\n"
        f"  console:  {api}/console/   (log in with {token})\n"
        f"  API:      {api}/app/api/v1/\n"
        "Stop with Ctrl-C.",
        flush=True,
    )


async def _run(args: argparse.Namespace, settings: Settings, names: Sequence[str]) -> None:
    from webhook_router.roles import build_roles
    from webhook_router.runtime import RoleDied, health_app, run_roles, serve

    if getattr(args, "migrate", False):
        await _ensure_database(settings)
    st = await _open_store(settings)
    if getattr(args, "migrate", False):
        applied = await store.migrate(st.pool)
        log.info("migrations applied", applied=applied)
    roles = build_roles(names, settings, st)
    health = None
    if getattr(args, "health_port", 0):
        from webhook_router.metrics import QueueDepths

        depths = QueueDepths(settings.names, settings.schedule)
        health = await serve(health_app(roles, depths), settings.api_host, args.health_port)
    stop = asyncio.Event()
    beside = None
    if getattr(args, "demo", False):
        from webhook_router.demo import run_demo

        beside = asyncio.create_task(run_demo(settings, st, roles, _cli_command()))
    elif args.command == "up":
        beside = asyncio.create_task(_announce(roles, settings, getattr(args, "token", None)))
    try:
        await run_roles(roles, drain=settings.drain_timeout, stop=stop)
    except RoleDied as exc:
        raise CommandError(f"stopped: a background task died ({exc})") from None
    finally:
        if beside is not None:
            beside.cancel()
        if health is not None:
            await health.cleanup()
        await st.pool.close()


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    names = ["recorder", "router", "worker", "api"]
    _check_listens(_listens(args, settings, names))
    args.token = None
    if not settings.api_token:
        args.token = secrets.token_urlsafe(24)
        settings.api_token = [args.token]
        print(f"API token (generated, set WEBHOOK_ROUTER_API_TOKEN to keep one): {args.token}")
    args.migrate = True
    _serve(_run(args, settings, names))


def _serve(main: Awaitable[None]) -> None:
    """Run a long-lived role on uvloop where it is installed (faster sockets and
    scheduling), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)  # type: ignore[arg-type]


def _role_command(name: str) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        if name == "api" and not settings.api_token:
            raise CommandError("set WEBHOOK_ROUTER_API_TOKEN: the API answers no one without it")
        _check_listens(_listens(args, settings, [name]))
        _serve(_run(args, settings, [name]))

    return command


def cmd_engine(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.demo import serve_engine
    from webhook_router.runtime import run_until_signal

    _check_listens([_engine_listen(settings)])

    async def go() -> None:
        runner = await serve_engine(settings)
        print(f"workflow engine (demo) at {settings.engine_url}", flush=True)
        try:
            await run_until_signal()
        finally:
            await runner.cleanup()

    asyncio.run(go())


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.demo import seed_demo

    _with_store(settings, lambda st: seed_demo(settings, st, args.cli))


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    async def go() -> list[str]:
        await _ensure_database(settings)
        st = await _open_store(settings)
        try:
            return await store.migrate(st.pool)
        finally:
            await st.pool.close()

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "nothing to apply: up to date")


def cmd_publish(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.publisher import Publisher

    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise CommandError(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE) from None

    async def go() -> str:
        async with Publisher(settings.amqp_url, settings.namespace) as publisher:
            return await publisher.publish(raw)

    try:
        print(asyncio.run(go()))
    except EventInvalid as exc:
        for e in exc.errors:
            print(f"{e['field']}: {e['message']}", file=sys.stderr)
        raise CommandError("the event is not valid; nothing was published", EXIT_USAGE) from None
    except broker.BrokerUnavailable as exc:
        raise CommandError(str(exc), EXIT_UNAVAILABLE) from None


# webhooks and jobs: each command parses its arguments, calls an admin action, prints


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        st = await _open_store(settings)
        try:
            return await work(st)
        finally:
            await st.pool.close()

    return asyncio.run(go())


def _with_admin(settings: Settings, work: Callable[[Admin], Awaitable[T]]) -> T:
    """Run an admin action; its refusals become one line and an exit code."""

    async def go(st: Store) -> T:
        admin = Admin(settings, st, who="cli")
        try:
            return await work(admin)
        except InputInvalid as exc:
            for e in exc.errors:
                print(f"{e['field']}: {e['message']}", file=sys.stderr)
            raise CommandError(f"{exc.message}; nothing was saved", EXIT_USAGE) from None
        except (NotFound, Conflict) as exc:
            raise CommandError(str(exc)) from None
        except BrokerUnavailable as exc:
            raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
        finally:
            await admin.close()

    result: T = _with_store(settings, go)
    return result


def _time(option: str, text: str | None) -> datetime | None:
    try:
        return None if text is None else parse_time(text)
    except ValueError as exc:
        raise CommandError(f"{option} {exc}: {text!r}", EXIT_USAGE) from None


def _change(args: argparse.Namespace) -> WebhookChange:
    """The webhook fields given on the command line (options named after the model's)."""
    data = {k: v for k in WebhookChange.options() if (v := getattr(args, k, None)) is not None}
    for key in WebhookChange.ENTRIES:
        if key in data:
            data[key] = dict(data[key])
    for key, parts in WebhookChange.WRITE_ONLY.items():
        given = {p: getattr(args, f"{key}_{p}") for p in parts}
        if any(v is not None for v in given.values()):
            data[key] = {p: v for p, v in given.items() if v is not None}
    if getattr(args, "disabled", False) or getattr(args, "disable", False):
        data["enabled"] = False
    if getattr(args, "enable", False):
        data["enabled"] = True
    try:
        return WebhookChange.parse(data)
    except InputInvalid as exc:
        for e in exc.errors:
            print(f"{e['field']}: {e['message']}", file=sys.stderr)
        raise CommandError("the webhook is not valid; nothing was saved", EXIT_USAGE) from None


async def _find_webhook(admin: Admin, space: str, kapp: str | None, name: str) -> WebhookDefinition:
    """The webhook, or a refusal that says where a webhook of that name is: a kapp webhook
    is only found with --kapp, a space-level one only without."""
    try:
        return await admin.find_webhook(space, kapp, name)
    except NotFound:
        pass
    namesakes = [w for w in await admin.store.space_webhooks(space) if w.name == name]
    kapps = [w.kapp for w in namesakes if w.kapp is not None]
    where = f"in kapp {kapp} of space {space}" if kapp else f"in space {space}"
    message = f"no webhook named {name!r} {where}"
    if kapp is not None and any(w.kapp is None for w in namesakes):
        message += f"; space {space} has one itself: leave out --kapp"
    elif kapps:
        flag = "add --kapp" if kapp is None else "use --kapp"
        choice = kapps[0] if len(kapps) == 1 else f"one of {', '.join(kapps)}"
        message += f"; it is a kapp webhook: {flag} {choice}"
    elif kapp is None:
        message += ", nor in any of its kapps"
    raise NotFound(message)


def cmd_webhooks_list(args: argparse.Namespace, settings: Settings) -> None:
    webhooks = _with_store(settings, lambda st: st.scope_webhooks(args.space, args.kapp))
    if args.json:
        _print_json({"webhooks": [Webhook.of(w).wire() for w in webhooks]})
        return
    rows = [
        [w.name, w.kapp or "-", w.type, w.event, "yes" if w.enabled else "no", w.url]
        for w in webhooks
    ]
    _table(rows, ["NAME", "KAPP", "TYPE", "EVENT", "ENABLED", "URL"])


def cmd_webhooks_show(args: argparse.Namespace, settings: Settings) -> None:
    webhook = _with_admin(settings, lambda a: _find_webhook(a, args.space, args.kapp, args.name))
    _print_json({"webhook": WebhookWithSecret.of(webhook).wire()})


def cmd_webhooks_create(args: argparse.Namespace, settings: Settings) -> None:
    change = _change(args)

    async def work(admin: Admin) -> tuple[WebhookDefinition, list[str]]:
        created = await admin.create_webhook(args.space, args.kapp, change, by="cli")
        return created, admin.warnings(created)

    created, warnings = _with_admin(settings, work)
    _warn(warnings)
    _print_json({"webhook": WebhookWithSecret.of(created).wire()})


def _warn(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"webhook-router: warning: {warning}", file=sys.stderr)


def cmd_webhooks_update(args: argparse.Namespace, settings: Settings) -> None:
    change = _change(args)

    async def work(admin: Admin) -> tuple[WebhookDefinition, list[str]]:
        current = await _find_webhook(admin, args.space, args.kapp, args.current)
        saved = await admin.update_webhook(current, change, by="cli")
        return saved, admin.warnings(saved)

    saved, warnings = _with_admin(settings, work)
    _warn(warnings)
    _print_json({"webhook": WebhookWithSecret.of(saved).wire()})


def cmd_webhooks_delete(args: argparse.Namespace, settings: Settings) -> None:
    async def work(admin: Admin) -> None:
        current = await _find_webhook(admin, args.space, args.kapp, args.name)
        await admin.delete_webhook(current, by="cli")

    _with_admin(settings, work)
    print(f"deleted {args.name}")


def cmd_webhooks_install_defaults(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.defaults import install_defaults

    created = _with_store(
        settings, lambda st: install_defaults(st, settings.tree_source, args.space, args.kapp)
    )
    print(f"created {len(created)} webhooks" + (": " + ", ".join(created) if created else ""))


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    try:
        status = parse_status(args.status) if args.status else None
    except ValueError as exc:
        raise CommandError(f"--status {exc}", EXIT_USAGE) from None
    if not 1 <= args.limit <= LIMIT_MAX:
        raise CommandError(f"--limit must be from 1 to {LIMIT_MAX}: {args.limit}", EXIT_USAGE)
    try:
        after = None if args.page_token is None else decode_token(args.page_token)
    except ValueError as exc:
        raise CommandError(f"--page-token {exc}: {args.page_token!r}", EXIT_USAGE) from None
    f = JobFilter(
        space=args.space,
        kapp=args.kapp,
        status=status,
        webhook=args.webhook,
        parent_type=args.parent_type,
        parent_key=args.parent_key,
        start=_time("--start", args.start),
        end=_time("--end", args.end),
        limit=args.limit,
        after=after,
    )
    page = _with_admin(settings, lambda a: a.jobs(f))
    jobs = page.jobs
    if args.json:
        _print_json({"webhookJobs": [j.wire() for j in jobs], "nextPageToken": page.next_token})
        return
    if page.next_token is not None:
        print(
            f"webhook-router: more jobs than these {len(jobs)}; for the next page, run the "
            f"same command with --page-token {page.next_token}",
            file=sys.stderr,
        )
    _table(
        [
            [
                str(j.id),
                j.status.value,
                j.summary,
                j.run_id,
                j.name,
                f"{j.tree_group} :: {j.tree_name}",
                j.scheduled_at.isoformat(timespec="seconds"),
            ]
            for j in jobs
        ],
        ["ID", "STATUS", "SUMMARY", "RUN", "WEBHOOK", "TREE", "SCHEDULED"],
    )


def _pretty(content: str | None) -> str:
    if content is None:
        return "(none)"
    try:
        return json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    except ValueError:
        return content


JOB_PREFIX_MIN = 4
JOB_ID_HELP = (
    f"the job's id, or its first {JOB_PREFIX_MIN} or more hex digits when no other job's "
    "id starts with them"
)


async def _find_job(admin: Admin, text: str) -> Job:
    """A job by its id or by a prefix of it that no other job's id has."""
    digits = text.replace("-", "").lower()
    if len(digits) == 32:
        return await admin.find_job(text)
    if not JOB_PREFIX_MIN <= len(digits) < 32 or not all(c in string.hexdigits for c in digits):
        raise CommandError(
            f"{text!r} is not a job id, nor its first {JOB_PREFIX_MIN} or more hex digits",
            EXIT_USAGE,
        )
    ids = await admin.store.job_ids_with_prefix(digits, limit=11)
    if not ids:
        raise NotFound(f"no webhook job's id starts with {text!r}")
    if len(ids) > 1:
        many = "more than 10" if len(ids) > 10 else str(len(ids))
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise CommandError(
            f"{many} job ids start with {text!r}: {shown}; give more of the id", EXIT_USAGE
        )
    return await admin.find_job(ids[0])


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> None:
    async def work(admin: Admin) -> JobDetail:
        return await admin.job_detail(await _find_job(admin, args.id))

    job = _with_admin(settings, work).wire()
    if args.json:
        _print_json({"webhookJob": job})
        return
    history = job["attemptHistory"]
    for key, value in job.items():
        if key == "attempts":
            value = _attempts_count(value, history)
        if key not in ("requestContent", "responseContent", "attemptHistory"):
            print(f"{key + ':':<13} {'' if value is None else value}")
    print("\nrequest:\n" + _pretty(job["requestContent"]))
    print("\nresponse:\n" + _pretty(job["responseContent"]))
    for a in history:
        answer = a["responseStatus"] if a["responseStatus"] is not None else a["error"]
        retry = f" (retry {a['replay']})" if a["replay"] else ""
        print(
            f"\nattempt {a['attempt']}{retry} at {a['startedAt']}: {answer} "
            f"in {a['durationMs']:.0f} ms"
        )


def _attempts_count(latest: int, history: Sequence[dict[str, Any]]) -> str:
    """Every attempt listed, as the console counts them; those of the latest run apart when
    an admin sent the job again (`attempts` on the wire counts only those)."""
    retries = max((a["replay"] for a in history), default=0)
    if not retries:
        return str(len(history))
    times = "time" if retries == 1 else "times"
    return (
        f"{len(history)} ({latest} since an admin last sent it again; sent again {retries} {times})"
    )


def cmd_jobs_retry(args: argparse.Namespace, settings: Settings) -> None:
    async def work(admin: Admin) -> ReplayResult:
        return await admin.retry_job(await _find_job(admin, args.id), by="cli")

    result = _with_admin(settings, work)
    print(f"job {result.job_id} {result.status} -> {result.url}")


def cmd_jobs_replay(args: argparse.Namespace, settings: Settings) -> None:
    start, end = _time("--start", args.start), _time("--end", args.end)

    async def work(admin: Admin) -> int:
        webhook = await _find_webhook(admin, args.space, args.kapp, args.webhook)
        return await admin.replay(webhook, start=start, end=end, dry_run=args.dry_run, by="cli")

    count = _with_admin(settings, work)
    print(f"{'would queue' if args.dry_run else 'queued'} {count} failed jobs")


def cmd_prune(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.durations import parse_duration
    from webhook_router.retention import PruneBlocked, prune

    try:
        seconds = parse_duration(args.older_than)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    try:
        dropped = _with_store(settings, lambda st: prune(st, seconds))
    except PruneBlocked as exc:
        raise CommandError(str(exc)) from None
    for name in dropped:
        print(f"dropped {name}")
    if not dropped:
        print("nothing to drop")


# the parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webhook-router",
        description="Platform events through RabbitMQ to webhook POSTs, every job recorded "
        "in PostgreSQL. Settings come from WEBHOOK_ROUTER_* environment variables.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def role(name: str, help_text: str) -> argparse.ArgumentParser:
        r = sub.add_parser(name, help=help_text, description=help_text)
        r.add_argument(
            "--health-port",
            type=int,
            default=0,
            help="serve /healthz and /readyz on this port (default: off)",
        )
        return r

    up = role("up", "Migrate, then run every role and the API in one process.")
    up.add_argument(
        "--demo",
        action="store_true",
        help="also run a local workflow engine, install demo webhooks and publish sample events",
    )
    up.set_defaults(func=cmd_up)
    for name, text in (
        ("router", "Run a router: events in, deliveries out."),
        ("worker", "Run a delivery worker: POST deliveries, report outcomes."),
        ("recorder", "Run a recorder: write outcomes to the job log."),
        ("api", "Run the HTTP API (ingest, webhooks, webhook jobs)."),
    ):
        role(name, text).set_defaults(func=_role_command(name))

    sub.add_parser(
        "migrate",
        help="Apply the database migrations (idempotent).",
        description="Apply the database migrations (idempotent).",
    ).set_defaults(func=cmd_migrate)

    sub.add_parser(
        "engine",
        help="Run the demo workflow engine at WEBHOOK_ROUTER_ENGINE_URL.",
        description="Run a small local workflow engine that answers run-tree calls like the "
        'real one ("Initiated run #N"), at WEBHOOK_ROUTER_ENGINE_URL.',
    ).set_defaults(func=cmd_engine)
    demo = sub.add_parser(
        "demo",
        help="Install the standard webhooks in the default space and publish sample events.",
        description="Install the standard webhooks in the default space (and kapp services) "
        "and publish five sample events.",
    )
    demo.add_argument(
        "--cli",
        default="webhook-router",
        metavar="COMMAND",
        help="how the closing hint runs the CLI, e.g. 'docker compose exec api "
        "webhook-router' (default: webhook-router)",
    )
    demo.set_defaults(func=cmd_demo)

    pub = sub.add_parser(
        "publish",
        help="Publish an event from a JSON file or stdin.",
        description="Publish an event from a JSON file or stdin; prints its "
        "id once the broker confirmed it.",
    )
    pub.add_argument("file", nargs="?", default="-", help="JSON file, or - for stdin (default)")
    pub.set_defaults(func=cmd_publish)

    def scoped(parser_: argparse.ArgumentParser, settings_default: str) -> None:
        parser_.add_argument(
            "--space",
            default=settings_default,
            help="space slug (default: WEBHOOK_ROUTER_DEFAULT_SPACE)",
        )
        parser_.add_argument("--kapp", default=None, help="kapp slug for kapp-level webhooks")

    def definition(parser_: argparse.ArgumentParser, *, create: bool) -> None:
        """An option per field of the webhook model (`--new-name` renames on update)."""
        for field, meaning in WebhookChange.options().items():
            flag = re.sub("([A-Z])", lambda m: "-" + m.group(1).lower(), field)
            if field in WebhookChange.ENTRIES:
                entry = WebhookChange.ENTRIES[field]
                parser_.add_argument(
                    f"--{entry}",
                    dest=field,
                    metavar="'NAME: VALUE'",
                    action="append",
                    type=_entry,
                    help=meaning.replace("`", "'") + f" Repeat for each {entry}; on update "
                    f"they replace all {field} (--no-{flag} removes them).",
                )
                parser_.add_argument(
                    f"--no-{flag}",
                    dest=field,
                    action="store_const",
                    const=[],
                    help=f"remove every {entry}",
                )
                continue
            if field in WebhookChange.WRITE_ONLY:
                for part in WebhookChange.WRITE_ONLY[field]:
                    pem = part in FILE_FIELDS
                    parser_.add_argument(
                        f"--{flag}-{part}",
                        dest=f"{field}_{part}",
                        metavar="FILE" if pem else part.upper(),
                        type=_file_text if pem else str,
                        help=f"{OWNER[part]} {part} ({'a PEM file' if pem else 'write-only'})",
                    )
                continue
            text = WebhookChange.takes_text(field)
            parser_.add_argument(
                "--new-name" if field == "name" and not create else f"--{flag}",
                dest=field,
                metavar=flag.upper().replace("-", "_"),
                required=create and field in REQUIRED,
                type=str if text else _json_value,
                help=meaning.replace("`", "'")
                + ("" if text else " (JSON)")
                + ("" if create else " Not given: unchanged."),
            )

    space_default = Settings().default_space
    wh = sub.add_parser(
        "webhooks",
        help="Create, update, delete, list and show webhooks.",
        description="Create, update, delete, list and show webhooks.",
    )
    whs = wh.add_subparsers(dest="action", required=True, metavar="ACTION")
    w = whs.add_parser("list", help="List the webhooks of a space or kapp.")
    scoped(w, space_default)
    w.add_argument("--json", action="store_true", help="print JSON")
    w.set_defaults(func=cmd_webhooks_list)
    w = whs.add_parser("show", help="Show one webhook, with its signing secret.")
    scoped(w, space_default)
    w.add_argument("name", help="the webhook's name (with --kapp for a kapp webhook)")
    w.set_defaults(func=cmd_webhooks_show)
    w = whs.add_parser("create", help="Create a webhook.")
    scoped(w, space_default)
    definition(w, create=True)
    w.add_argument("--disabled", action="store_true", help="create it disabled")
    w.set_defaults(func=cmd_webhooks_create)
    w = whs.add_parser("update", help="Change some fields of a webhook.")
    scoped(w, space_default)
    w.add_argument("current", metavar="name", help="the webhook's name now")
    definition(w, create=False)
    toggle = w.add_mutually_exclusive_group()
    toggle.add_argument(
        "--enable", action="store_true", help="deliver its events again (clears why it was off)"
    )
    toggle.add_argument("--disable", action="store_true", help="stop delivering its events")
    w.set_defaults(func=cmd_webhooks_update)
    w = whs.add_parser("delete", help="Delete a webhook.")
    scoped(w, space_default)
    w.add_argument("name", help="the webhook's name (with --kapp for a kapp webhook)")
    w.set_defaults(func=cmd_webhooks_delete)
    w = whs.add_parser(
        "install-defaults",
        help="Create the platform's standard webhooks (idempotent).",
        description="Create the platform's standard webhooks: one per "
        "space-level catalogue entry, or with --kapp one per kapp-level entry; "
        "each POSTs to the run-tree path of its tree. Running it twice changes "
        "nothing.",
    )
    scoped(w, space_default)
    w.set_defaults(func=cmd_webhooks_install_defaults)

    pr = sub.add_parser(
        "prune",
        help="Forget old webhook jobs: drop the job log's monthly partitions of events older "
        "than --older-than.",
        description="Drops both job tables' partitions of every month that ends before now "
        "minus DURATION (whole months, so up to a month more is kept), deletes older rows from "
        "the DEFAULT partitions, then refreshes the tables' planner statistics. Safe while "
        "every role runs: writers wait at most 0.2 s at a time.",
    )
    pr.add_argument(
        "--older-than",
        metavar="DURATION",
        required=True,
        help="how old a job's event must be to go, e.g. 90d (units ms, s, m, h, d)",
    )
    pr.set_defaults(func=cmd_prune)

    jb = sub.add_parser(
        "jobs",
        help="List, show, retry and replay webhook jobs.",
        description="List, show, retry and replay webhook jobs.",
    )
    jbs = jb.add_subparsers(dest="action", required=True, metavar="ACTION")
    j = jbs.add_parser("list", help="List jobs, newest first.")
    scoped(j, space_default)
    j.add_argument("--status", help="Queued, In Progress, Complete, Failed or Cancelled")
    j.add_argument("--webhook", help="webhook name")
    j.add_argument("--parent-type", help="event type of the parent, e.g. Submission")
    j.add_argument("--parent-key", help="submission id, form slug, username...")
    j.add_argument("--start", help="scheduled at or after (ISO 8601 with zone)")
    j.add_argument("--end", help="scheduled before (ISO 8601 with zone)")
    j.add_argument(
        "--limit",
        type=int,
        default=LIMIT_DEFAULT,
        help=f"jobs per page, 1 to {LIMIT_MAX} (default {LIMIT_DEFAULT})",
    )
    j.add_argument(
        "--page-token",
        metavar="TOKEN",
        help="continue after the page that gave this token (printed on stderr when there "
        "are more jobs, and as nextPageToken with --json); keep the same filters",
    )
    j.add_argument(
        "--json", action="store_true", help="print JSON, with the nextPageToken of the page"
    )
    j.set_defaults(func=cmd_jobs_list)
    j = jbs.add_parser("show", help="Show a job with its request, response and attempts.")
    j.add_argument("id", help=JOB_ID_HELP)
    j.add_argument("--json", action="store_true", help="print JSON")
    j.set_defaults(func=cmd_jobs_show)
    j = jbs.add_parser(
        "retry", help="Send a Failed job again through its webhook's current definition."
    )
    j.add_argument("id", help=JOB_ID_HELP)
    j.set_defaults(func=cmd_jobs_retry)
    j = jbs.add_parser("replay", help="Retry every Failed job of a webhook in a time window.")
    scoped(j, space_default)
    j.add_argument("--webhook", required=True, help="webhook name")
    j.add_argument("--start", help="scheduled at or after (ISO 8601 with zone)")
    j.add_argument("--end", help="scheduled before (ISO 8601 with zone)")
    j.add_argument("--dry-run", action="store_true", help="only count what would be queued")
    j.set_defaults(func=cmd_jobs_replay)
    return p


LONG_LIVED = frozenset({"up", "router", "worker", "recorder", "api", "engine"})
"""The commands that run until stopped; every other one does its work and exits."""


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = Settings()
    level = settings.log_level
    if args.command not in LONG_LIVED and "log_level" not in settings.model_fields_set:
        level = "warning"  # a one-shot command prints its answer; its progress is noise
    logs.configure(settings.log_format, level)
    try:
        args.func(args, settings)
    except CommandError as exc:
        print(f"webhook-router: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
