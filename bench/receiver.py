"""The benchmark's receiver: answers run-tree POSTs like the workflow engine and keeps
what the benchmark checks: POSTs per job id, and latency from the event's timestamp."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import time
from datetime import datetime

import orjson
from aiohttp import web


def fails_once(job_id: str, share: float) -> bool:
    """Whether this job's first POST is answered 503 (deterministic per job id)."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-share", type=float, default=0.0)
    args = parser.parse_args()
    posts: dict[str, int] = {}
    answered: dict[str, int] = {}
    latencies: list[float] = []
    runs = itertools.count(1)

    async def run_tree(request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        job_id = request.headers.get("webhook-id", "")
        seen = posts.get(job_id, 0)
        posts[job_id] = seen + 1
        if seen == 0 and args.fail_share and fails_once(job_id, args.fail_share):
            return web.json_response({"message": "busy"}, status=503)
        stamp = orjson.loads(body)["event"]["timestamp"]
        sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        latencies.append(arrived - sent)
        answered[job_id] = answered.get(job_id, 0) + 1
        run = next(runs)
        return web.json_response({"message": f"Initiated run #{run}.", "run": {"id": run}})

    async def stats(request: web.Request) -> web.Response:
        duplicates = sum(1 for n in answered.values() if n > 1)
        return web.Response(
            body=orjson.dumps(
                {
                    "jobs": len(answered),
                    "posts": sum(posts.values()),
                    "duplicates": duplicates,
                    "latencies": latencies,
                }
            ),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", run_tree)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
