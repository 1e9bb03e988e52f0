"""`webhook-router`: run the roles, migrate, publish, manage webhooks and API tokens, and
read jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import string
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
import structlog

from webhook_router import __version__, broker, launch, logs, store
from webhook_router.admin import (
    REQUIRED,
    Admin,
    AuditPage,
    BrokerUnavailable,
    Conflict,
    NotFound,
)
from webhook_router.credentials import AUTH_FIELDS, FILE_FIELDS
from webhook_router.deadletters import DeadLetter, DeadLetterFilter
from webhook_router.encryption import KeyMissing, new_key
from webhook_router.events import EventInvalid
from webhook_router.launch import EXIT_UNAVAILABLE, EXIT_USAGE, CannotStart
from webhook_router.models import (
    LIMIT_DEFAULT,
    LIMIT_MAX,
    AuditLogEntry,
    AuditQuery,
    DeadLetterDetail,
    DeadLetterQuery,
    InputInvalid,
    Job,
    JobDetail,
    JobQuery,
    Webhook,
    WebhookChange,
    WebhookWithSecret,
    parse_time,
)
from webhook_router.models import DeadLetter as DeadLetterOut
from webhook_router.replay import ReplayResult
from webhook_router.rights import Role, TokenInfo, space_list
from webhook_router.settings import Settings
from webhook_router.store import JobFilter, Store
from webhook_router.webhooks import Webhook as WebhookDefinition

log = structlog.get_logger(__name__)

T = TypeVar("T")
OWNER = {part: strategy for strategy, parts in AUTH_FIELDS.items() for part in parts}
"""The auth strategy each credential is for."""


class CommandError(Exception):
    """A failure to report in one line and exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _refused(errors: Sequence[Mapping[str, str]], message: str) -> CommandError:
    """Each field at fault on its own line, then the refusal (a usage error)."""
    for e in errors:
        print(f"{e['field']}: {e['message']}", file=sys.stderr)
    return CommandError(message, EXIT_USAGE)


CLEARED = object()
"""What a `--no-...` option (`--no-rate-limit`, `--no-auth-strategy`...) stores: the field
set to null."""


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


# running the roles (launch.py)


def cmd_up(args: argparse.Namespace, settings: Settings) -> None:
    names = ["recorder", "router", "worker", "api"]
    launch.check_listens(launch.listens(settings, names, args.health_port, args.demo))
    launch.warn_without_keys(settings)
    token = None
    if not settings.api_token:
        token = secrets.token_urlsafe(24)
        settings.api_token = [token]
        print(f"API token (generated, set WEBHOOK_ROUTER_API_TOKEN to keep one): {token}")
    launch.run(
        settings,
        names,
        health_port=args.health_port,
        up=True,
        demo=args.demo,
        generated_token=token,
    )


def _role_command(name: str) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        if name == "api" and not settings.api_token:
            print(
                "webhook-router: warning: WEBHOOK_ROUTER_API_TOKEN is empty: the API accepts "
                "only tokens made with `webhook-router tokens create`",
                file=sys.stderr,
            )
        launch.check_listens(launch.listens(settings, [name], args.health_port, False))
        launch.run(settings, [name], health_port=args.health_port)

    return command


def cmd_engine(args: argparse.Namespace, settings: Settings) -> None:
    from webhook_router.demo import serve_engine
    from webhook_router.runtime import run_until_signal

    launch.check_listens([launch.engine_listen(settings)])

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
    launch.warn_without_keys(settings)
    asyncio.run(launch.ensure_database(settings))
    applied = _with_store(settings, lambda st: store.migrate(st.pool))
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
        raise _refused(exc.errors, "the event is not valid; nothing was published") from None
    except broker.BrokerUnavailable as exc:
        raise CommandError(str(exc), EXIT_UNAVAILABLE) from None


# webhooks and jobs: each command parses its arguments, calls an admin action, prints


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        st = await launch.open_store(settings)
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
            raise _refused(exc.errors, f"{exc.message}; nothing was saved") from None
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
    data: dict[str, Any] = {
        k: None if v is CLEARED else v
        for k in [*WebhookChange.options(), *WebhookChange.flags()]
        if (v := getattr(args, k, None)) is not None
    }
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
        raise _refused(exc.errors, f"{exc.message}; nothing was saved") from None


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
        [
            w.name,
            w.kapp or "-",
            w.type,
            w.event,
            "yes" if w.enabled else f"no: {w.disabled_reason}" if w.disabled_reason else "no",
            "-" if w.rate_limit is None else f"{w.rate_limit:g}/s",
            w.url,
        ]
        for w in webhooks
    ]
    _table(rows, ["NAME", "KAPP", "TYPE", "EVENT", "ENABLED", "RATE", "URL"])


def _revealed(webhook: WebhookDefinition) -> dict[str, Any]:
    """The webhook with its signing secret, or an error naming the key it is sealed under."""
    if webhook.secret is None:
        raise CommandError(f"the webhook's signing secret cannot be read: {webhook.unreadable}")
    return WebhookWithSecret.of(webhook).wire()


def cmd_webhooks_show(args: argparse.Namespace, settings: Settings) -> None:
    webhook = _with_admin(settings, lambda a: _find_webhook(a, args.space, args.kapp, args.name))
    _print_json({"webhook": _revealed(webhook)})


def cmd_webhooks_save(args: argparse.Namespace, settings: Settings) -> None:
    """Create, or with a current name update, then print the webhook and any warnings."""
    change = _change(args)

    async def work(admin: Admin) -> tuple[WebhookDefinition, list[str]]:
        if getattr(args, "current", None) is None:
            saved = await admin.create_webhook(args.space, args.kapp, change, by="cli")
        else:
            current = await _find_webhook(admin, args.space, args.kapp, args.current)
            saved = await admin.update_webhook(current, change, by="cli")
        return saved, admin.warnings(saved)

    saved, warnings = _with_admin(settings, work)
    for warning in warnings:
        print(f"webhook-router: warning: {warning}", file=sys.stderr)
    _print_json({"webhook": _revealed(saved)})


def cmd_webhooks_delete(args: argparse.Namespace, settings: Settings) -> None:
    async def work(admin: Admin) -> None:
        current = await _find_webhook(admin, args.space, args.kapp, args.name)
        await admin.delete_webhook(current, by="cli")

    _with_admin(settings, work)
    print(f"deleted {args.name}")


def cmd_webhooks_install_defaults(args: argparse.Namespace, settings: Settings) -> None:
    created = _with_admin(settings, lambda a: a.install_defaults(args.space, args.kapp, by="cli"))
    print(f"created {len(created)} webhooks" + (": " + ", ".join(created) if created else ""))


def _flag(field: str) -> str:
    """The command-line option of a query parameter: parentType -> --parent-type."""
    return "--" + re.sub(r"[A-Z]", lambda m: "-" + m.group().lower(), field)


Q = TypeVar("Q")


def _parsed(parse: Callable[[Mapping[str, str]], Q], given: Mapping[str, str | None]) -> Q:
    """Options read by the API's own query model (`parse`): the same refusals, each naming
    its option and the value given, all at once."""
    try:
        return parse({k: v for k, v in given.items() if v is not None})
    except InputInvalid as exc:
        problems = []
        for e in exc.errors:
            message = re.sub(r"\b(parentType|parentKey)\b", lambda m: _flag(m[1]), e["message"])
            value = given.get(e["field"])
            problems.append(f"{_flag(e['field'])} {message}" + (f": {value!r}" if value else ""))
        raise CommandError("; ".join(problems), EXIT_USAGE) from None


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    query = _parsed(
        JobQuery.parse,
        {
            "status": args.status,
            "webhook": args.webhook,
            "parentType": args.parent_type,
            "parentKey": args.parent_key,
            "start": args.start,
            "end": args.end,
            "limit": str(args.limit),
            "pageToken": args.page_token,
        },
    )
    f = JobFilter.of(query, args.space, args.kapp)
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
    if result.out_of_order:
        print("delivered out of order: its webhook is ordered per key, a retry by hand does not")
        print("wait for the key")


def cmd_jobs_replay(args: argparse.Namespace, settings: Settings) -> None:
    start, end = _time("--start", args.start), _time("--end", args.end)

    async def work(admin: Admin) -> int:
        webhook = await _find_webhook(admin, args.space, args.kapp, args.webhook)
        return await admin.replay(webhook, start=start, end=end, dry_run=args.dry_run, by="cli")

    count = _with_admin(settings, work)
    print(f"{'would queue' if args.dry_run else 'queued'} {count} failed jobs")


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> None:
    made, token = _with_admin(
        settings,
        lambda a: a.create_token(args.name, Role(args.role), args.space or [], by="cli"),
    )
    spaces = space_list(frozenset(made.spaces) or None)
    print(
        f"token {made.name} ({made.role.value} of {spaces}); shown this once, keep it:",
        file=sys.stderr,
    )
    print(token)


def _token_json(t: TokenInfo) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "name": t.name,
        "role": t.role.value,
        "spaces": t.spaces,
        "createdAt": when(t.created_at),
        "lastUsedAt": when(t.last_used_at),
        "revokedAt": when(t.revoked_at),
    }


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> None:
    tokens = _with_admin(settings, lambda a: a.tokens())
    if args.json:
        _print_json({"tokens": [_token_json(t) for t in tokens]})
        return

    def when(value: datetime | None) -> str:
        return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"

    rows = [
        [
            t.name,
            t.role.value,
            ",".join(t.spaces) or "*",
            when(t.created_at),
            when(t.last_used_at),
            when(t.revoked_at),
        ]
        for t in tokens
    ]
    _table(rows, ["NAME", "ROLE", "SPACES", "CREATED", "LAST USED", "REVOKED"])


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> None:
    _with_admin(settings, lambda a: a.revoke_token(args.name, by="cli"))
    print(f"revoked {args.name}")


def _dead_selection(args: argparse.Namespace) -> dict[str, str | None]:
    return {"role": args.role, "reason": args.reason, "start": args.start, "end": args.end}


def _dead_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise CommandError(f"{text!r} is not a dead letter id", EXIT_USAGE) from None


def cmd_dead_list(args: argparse.Namespace, settings: Settings) -> None:
    given = _dead_selection(args) | {"limit": str(args.limit), "pageToken": args.page_token}
    query = _parsed(DeadLetterQuery.parse, given)
    f = DeadLetterFilter(after=query.page_token, **query.model_dump(exclude={"page_token"}))
    page = _with_admin(settings, lambda a: a.dead_letters(f))
    letters = [DeadLetterOut.of(d).wire() for d in page.dead_letters]
    if args.json:
        _print_json({"deadLetters": letters, "nextPageToken": page.next_token})
        return
    if page.next_token is not None:
        print(
            f"webhook-router: more dead letters than these {len(letters)}; for the next page, "
            f"run the same command with --page-token {page.next_token}",
            file=sys.stderr,
        )
    _table(
        [
            [
                d["id"],
                d["deadAt"],
                d["role"],
                d["reason"][:80],
                d["eventId"],
                d["webhook"]["name"] if d["webhook"] else None,
                d["requeueCount"] or "",
            ]
            for d in letters
        ],
        ["ID", "DEAD AT", "ROLE", "REASON", "EVENT", "WEBHOOK", "REQUEUED"],
    )


def cmd_dead_show(args: argparse.Namespace, settings: Settings) -> None:
    letter_id = _dead_id(args.id)
    letter = DeadLetterDetail.of(
        _with_admin(settings, lambda a: a.find_dead_letter(letter_id))
    ).wire()
    if args.json:
        _print_json({"deadLetter": letter})
        return
    for key, value in letter.items():
        if key not in ("body", "bodyBase64", "preview", "headers"):
            print(f"{key + ':':<14} {'' if value is None else value}")
    print("\nheaders:\n" + json.dumps(letter["headers"], indent=2, ensure_ascii=False))
    print("\nbody:\n" + _pretty(letter["body"]))


def cmd_dead_requeue(args: argparse.Namespace, settings: Settings) -> None:
    filtered = any(getattr(args, k) is not None for k in ("role", "reason", "start", "end"))
    if args.id is not None:
        if filtered or args.all:
            raise CommandError("give a dead letter id or filters, not both", EXIT_USAGE)
        letter_id = _dead_id(args.id)

        async def one(admin: Admin) -> DeadLetter:
            return await admin.requeue_dead_letter(
                await admin.find_dead_letter(letter_id), by="cli"
            )

        letter = _with_admin(settings, one)
        times = "time" if letter.requeue_count == 1 else "times"
        print(f"dead letter {letter.id} requeued ({letter.requeue_count} {times} in all)")
        return
    if not filtered and not args.all:
        raise CommandError(
            "give a dead letter id, filters, or --all to requeue every dead letter", EXIT_USAGE
        )
    query = _parsed(DeadLetterQuery.parse, _dead_selection(args))
    f = DeadLetterFilter(**query.model_dump(exclude={"page_token", "limit"}))
    count = _with_admin(settings, lambda a: a.requeue_dead_letters(f, by="cli"))
    print(f"requeued {count} dead letters")


def cmd_secrets_new_key(args: argparse.Namespace, settings: Settings) -> None:
    print(new_key())


def cmd_secrets_rotate_key(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.encryption_keys:
        raise CommandError("set WEBHOOK_ROUTER_ENCRYPTION_KEYS: there is no key to seal under")
    try:
        done = _with_admin(settings, lambda admin: admin.reseal_secrets(by="cli"))
    except KeyMissing as exc:
        raise CommandError(f"{exc}; nothing was changed (list every key still in use)") from None
    print(f"resealed {done.resealed} webhooks under the first key; {done.current} already were")
    if args.bodies:
        bodies = _with_admin(settings, lambda admin: admin.reseal_bodies(by="cli"))
        print(
            f"resealed the bodies of {bodies.jobs} jobs and {bodies.attempts} attempts; "
            f"{bodies.unreadable} bodies no listed key opens were left as they are"
        )


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> None:
    given = {
        "start": args.start,
        "end": args.end,
        "limit": str(args.limit),
        "pageToken": args.page_token,
    }
    query = _parsed(AuditQuery.parse, given)
    start, end, after = query.start, query.end, query.page_token

    async def work(admin: Admin) -> AuditPage:
        space = None if args.all_spaces else args.space
        return await admin.audit_log(space, start=start, end=end, limit=query.limit, after=after)

    page = _with_admin(settings, work)
    entries = [AuditLogEntry.of(e).wire() for e in page.entries]
    if args.json:
        _print_json({"auditLog": entries, "nextPageToken": page.next_token})
        return
    _table(
        [(e["at"], e["actor"], e["space"], e["action"], e["target"]) for e in entries],
        ["AT", "ACTOR", "SPACE", "ACTION", "TARGET"],
    )
    if page.next_token is not None:
        print(f"more: --page-token {page.next_token}", file=sys.stderr)


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


# the parser: one table of commands, each with its function, help and arguments

Argument = Callable[[argparse.ArgumentParser], Any]


def arg(*flags: str, **options: Any) -> Argument:
    return lambda p: p.add_argument(*flags, **options)


def scoped(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--space",
        default=Settings().default_space,
        help="space slug (default: WEBHOOK_ROUTER_DEFAULT_SPACE)",
    )
    p.add_argument("--kapp", default=None, help="kapp slug for kapp-level webhooks")


def definition(*, create: bool) -> Argument:
    """An option per field of the webhook model (`--new-name` renames on update)."""

    def add(p: argparse.ArgumentParser) -> None:
        for field, meaning in WebhookChange.options().items():
            flag = _flag(field).removeprefix("--")
            if field in WebhookChange.ENTRIES:
                entry = WebhookChange.ENTRIES[field]
                p.add_argument(
                    f"--{entry}",
                    dest=field,
                    metavar="'NAME: VALUE'",
                    action="append",
                    type=_entry,
                    help=meaning.replace("`", "'") + f" Repeat for each {entry}; on update "
                    f"they replace all {field} (--no-{flag} removes them).",
                )
                p.add_argument(
                    f"--no-{flag}",
                    dest=field,
                    action="store_const",
                    const=[],
                    help=f"remove every {entry}",
                )
                continue
            if field in WebhookChange.WRITE_ONLY:
                if not create and field in WebhookChange.NULLABLE:
                    p.add_argument(
                        f"--no-{flag}",
                        dest=field,
                        action="store_const",
                        const=CLEARED,
                        help=f"forget the stored {field} credentials",
                    )
                for part in WebhookChange.WRITE_ONLY[field]:
                    pem = part in FILE_FIELDS
                    p.add_argument(
                        f"--{flag}-{part}",
                        dest=f"{field}_{part}",
                        metavar="FILE" if pem else part.upper(),
                        type=_file_text if pem else str,
                        help=f"{OWNER[part]} {part} ({'a PEM file' if pem else 'write-only'})",
                    )
                continue
            text = WebhookChange.takes_text(field)
            if not create and field in WebhookChange.NULLABLE:
                p.add_argument(
                    f"--no-{flag}",
                    dest=field,
                    action="store_const",
                    const=CLEARED,
                    help=f"no {flag.replace('-', ' ')} (null)",
                )
            p.add_argument(
                "--new-name" if field == "name" and not create else f"--{flag}",
                dest=field,
                metavar=flag.upper().replace("-", "_"),
                required=create and field in REQUIRED,
                type=str if text else _json_value,
                help=meaning.replace("`", "'")
                + ("" if text else " (JSON)")
                + ("" if create else " Not given: unchanged."),
            )
        for field, meaning in WebhookChange.flags().items():
            p.add_argument(
                f"--{_flag(field).removeprefix('--')}",
                dest=field,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=meaning.replace("`", "'") + ("" if create else " Not given: unchanged."),
            )

    return add


def toggle(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--enable", action="store_true", help="deliver its events again (clears why it was off)"
    )
    group.add_argument("--disable", action="store_true", help="stop delivering its events")


HEALTH = arg(
    "--health-port",
    type=int,
    default=0,
    help="serve /healthz and /readyz on this port (default: off)",
)
JSON_OUT = arg("--json", action="store_true", help="print JSON")
NAME = arg("name", help="the webhook's name (with --kapp for a kapp webhook)")
JOB_ID = arg("id", help=JOB_ID_HELP)
START = arg("--start", help="scheduled at or after (ISO 8601 with zone)")
END = arg("--end", help="scheduled before (ISO 8601 with zone)")
DEAD_ROLE = arg("--role", help="the role that failed it: router, worker, recorder (or broker)")
DEAD_REASON = arg("--reason", help="text the reason contains, in any case")
DEAD_START = arg("--start", help="dead at or after (ISO 8601 with zone)")
DEAD_END = arg("--end", help="dead before (ISO 8601 with zone)")


def paging(what: str, json: str = "print JSON, with its nextPageToken") -> list[Argument]:
    """A list command's paging options, as the API's `limit` and `pageToken`."""
    return [
        arg("--limit", type=int, default=LIMIT_DEFAULT,
            help=f"{what} per page, 1 to {LIMIT_MAX} (default {LIMIT_DEFAULT})"),
        arg("--page-token", metavar="TOKEN", help="continue after the page that gave this "
            f"token (printed on stderr when there are more {what}, and as nextPageToken with "
            "--json); keep the same filters"),
        arg("--json", action="store_true", help=json),
    ]  # fmt: skip


WEBHOOKS = "Create, update, delete, list and show webhooks."
JOBS = "List, show, retry and replay webhook jobs."
TOKENS = "Create, list and revoke the API's tokens (roles and spaces: docs/security.md)."
DEAD = "List, show and requeue dead letters (messages a role could not handle)."
SECRETS = "Make an encryption key; reseal every stored secret under the first key."
AUDIT = "Read the audit trail: who changed what through the API, console or CLI."
GROUPS = {
    "webhooks": WEBHOOKS,
    "jobs": JOBS,
    "dead": DEAD,
    "tokens": TOKENS,
    "secrets": SECRETS,
    "audit": AUDIT,
}

# command (a group's action after a space), function, help, description (None: the help),
# arguments
COMMANDS: tuple[tuple[str, Callable[..., Any], str, str | None, list[Argument]], ...] = (
    ("up", cmd_up, "Migrate, then run every role and the API in one process.", None, [
        HEALTH,
        arg("--demo", action="store_true", help="also run a local workflow engine, install "
            "demo webhooks and publish sample events"),
    ]),
    ("router", _role_command("router"), "Run a router: events in, deliveries out.", None,
     [HEALTH]),
    ("worker", _role_command("worker"),
     "Run a delivery worker: POST deliveries, report outcomes.", None, [HEALTH]),
    ("recorder", _role_command("recorder"), "Run a recorder: write outcomes to the job log.",
     None, [HEALTH]),
    ("api", _role_command("api"), "Run the HTTP API (ingest, webhooks, webhook jobs).", None,
     [HEALTH]),
    ("migrate", cmd_migrate, "Apply the database migrations (idempotent).", None, []),
    ("engine", cmd_engine, "Run the demo workflow engine at WEBHOOK_ROUTER_ENGINE_URL.",
     "Run a small local workflow engine that answers run-tree calls like the real one "
     '("Initiated run #N"), at WEBHOOK_ROUTER_ENGINE_URL.', []),
    ("demo", cmd_demo,
     "Install the standard webhooks in the default space and publish sample events.",
     "Install the standard webhooks in the default space (and kapp services) and publish "
     "five sample events.", [
        arg("--cli", default="webhook-router", metavar="COMMAND", help="how the closing hint "
            "runs the CLI, e.g. 'docker compose exec api webhook-router' (default: "
            "webhook-router)"),
    ]),
    ("publish", cmd_publish, "Publish an event from a JSON file or stdin.",
     "Publish an event from a JSON file or stdin; prints its id once the broker confirmed it.",
     [arg("file", nargs="?", default="-", help="JSON file, or - for stdin (default)")]),
    ("webhooks list", cmd_webhooks_list, "List the webhooks of a space or kapp.", None,
     [scoped, JSON_OUT]),
    ("webhooks show", cmd_webhooks_show, "Show one webhook, with its signing secret.", None,
     [scoped, NAME]),
    ("webhooks create", cmd_webhooks_save, "Create a webhook.", None, [
        scoped,
        definition(create=True),
        arg("--disabled", action="store_true", help="create it disabled"),
    ]),
    ("webhooks update", cmd_webhooks_save, "Change some fields of a webhook.", None, [
        scoped,
        arg("current", metavar="name", help="the webhook's name now"),
        definition(create=False),
        toggle,
    ]),
    ("webhooks delete", cmd_webhooks_delete, "Delete a webhook.", None, [scoped, NAME]),
    ("webhooks install-defaults", cmd_webhooks_install_defaults,
     "Create the platform's standard webhooks (idempotent).",
     "Create the platform's standard webhooks: one per space-level catalogue entry, or with "
     "--kapp one per kapp-level entry; each POSTs to the run-tree path of its tree. Running "
     "it twice changes nothing.", [scoped]),
    ("prune", cmd_prune,
     "Forget old webhook jobs: drop the job log's monthly partitions of events older than "
     "--older-than.",
     "Drops both job tables' partitions of every month that ends before now minus DURATION "
     "(whole months, so up to a month more is kept), deletes older rows from the DEFAULT "
     "partitions, then refreshes the tables' planner statistics. Safe while every role runs: "
     "writers wait at most 0.2 s at a time.", [
        arg("--older-than", metavar="DURATION", required=True, help="how old a job's event "
            "must be to go, e.g. 90d (units ms, s, m, h, d)"),
    ]),
    ("jobs list", cmd_jobs_list, "List jobs, newest first.", None, [
        scoped,
        arg("--status", help="Queued, In Progress, Complete, Failed or Cancelled"),
        arg("--webhook", help="webhook name"),
        arg("--parent-type", help="event type of the parent, e.g. Submission"),
        arg("--parent-key", help="submission id, form slug, username..."),
        START,
        END,
        *paging("jobs"),
    ]),
    ("jobs show", cmd_jobs_show, "Show a job with its request, response and attempts.", None,
     [JOB_ID, JSON_OUT]),
    ("jobs retry", cmd_jobs_retry,
     "Send a Failed job again through its webhook's current definition.", None, [JOB_ID]),
    ("jobs replay", cmd_jobs_replay, "Retry every Failed job of a webhook in a time window.",
     None, [
        scoped,
        arg("--webhook", required=True, help="webhook name"),
        START,
        END,
        arg("--dry-run", action="store_true", help="only count what would be queued"),
    ]),
    ("tokens create", cmd_tokens_create, "Make an API token; prints it once.",
     "Make an API token with a role (admin: everything in its spaces; reader: GET webhooks "
     "without secrets, jobs and metrics; publisher: POST events) for some spaces or every "
     "space. Prints the token once on stdout; only its hash is stored.", [
        arg("--name", required=True, help="a name for it, unique (shown in logs and lists)"),
        arg("--role", required=True, choices=[r.value for r in Role],
            help="admin, reader or publisher (docs/security.md)"),
        arg("--space", action="append", metavar="SLUG", help="a space it reaches; repeat for "
            "more (default: every space)"),
    ]),
    ("tokens list", cmd_tokens_list,
     "List the API tokens: name, role, spaces, created, last used, revoked (never the token).",
     None, [JSON_OUT]),
    ("tokens revoke", cmd_tokens_revoke,
     "Revoke an API token: refused everywhere within a second.", None,
     [arg("name", help="the token's name")]),
    ("dead list", cmd_dead_list, "List dead letters, newest first.", None, [
        DEAD_ROLE,
        DEAD_REASON,
        DEAD_START,
        DEAD_END,
        *paging("dead letters"),
    ]),
    ("dead show", cmd_dead_show, "Show a dead letter whole: reason, headers and body.", None,
     [arg("id", help="the dead letter's id"), JSON_OUT]),
    ("dead requeue", cmd_dead_requeue,
     "Send dead letters back to where they died: one by id, or every one the filters select "
     "that was never requeued.", None, [
        arg("id", nargs="?", default=None, help="the dead letter's id (else give filters or "
            "--all)"),
        DEAD_ROLE,
        DEAD_REASON,
        DEAD_START,
        DEAD_END,
        arg("--all", action="store_true", help="with no id nor filter: every dead letter "
            "never requeued"),
    ]),
    ("secrets new-key", cmd_secrets_new_key,
     "Print a new key for WEBHOOK_ROUTER_ENCRYPTION_KEYS (32 random bytes, base64).", None, []),
    ("secrets rotate-key", cmd_secrets_rotate_key,
     "Reseal every webhook's secrets and credentials under the first key.",
     "Reseal every webhook's signing secrets and credentials under the first key of "
     "WEBHOOK_ROUTER_ENCRYPTION_KEYS, in one transaction; plaintext from before a key was set "
     "is sealed too. Running it again changes nothing. Prints the counts.", [
        arg("--bodies", action="store_true", help="then the job log's bodies too, in batches "
            "while the roles run: those sealed under another key, and plaintext ones when "
            "WEBHOOK_ROUTER_ENCRYPT_PAYLOADS is on"),
    ]),
    ("audit list", cmd_audit_list, "List the audit trail of a space, newest first.", None, [
        arg("--space", default=Settings().default_space,
            help="space slug (default: WEBHOOK_ROUTER_DEFAULT_SPACE)"),
        arg("--all-spaces", action="store_true", help="every space's entries"),
        arg("--start", help="at or after (ISO 8601 with zone)"),
        arg("--end", help="before (ISO 8601 with zone)"),
        *paging("entries", json="print JSON, with before and after, and the nextPageToken"),
    ]),
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webhook-router",
        description="Platform events through RabbitMQ to webhook POSTs, every job recorded "
        "in PostgreSQL. Settings come from WEBHOOK_ROUTER_* environment variables.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for command, func, help_text, description, arguments in COMMANDS:
        *group, name = command.split()
        parent = sub
        if group:
            if group[0] not in groups:
                g = sub.add_parser(group[0], help=GROUPS[group[0]], description=GROUPS[group[0]])
                groups[group[0]] = g.add_subparsers(dest="action", required=True, metavar="ACTION")
            parent = groups[group[0]]
        c = parent.add_parser(name, help=help_text, description=description or help_text)
        for argument in arguments:
            argument(c)
        c.set_defaults(func=func)
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
    except (CommandError, CannotStart) as exc:
        print(f"webhook-router: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
