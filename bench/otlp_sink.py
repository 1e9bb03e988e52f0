"""A loopback OTLP/HTTP trace receiver for benchmarks: decodes and counts every span sent to
`/v1/traces` (opentelemetry-proto, the dev extra) and answers `GET /stats` with the counts.

    python bench/otlp_sink.py --port 4318 &
    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
        python bench/e2e.py --scenario single

It stands in for a collector; it runs on the same machine, so its CPU is part of the cost
measured (a real collector would usually run elsewhere).
"""

from __future__ import annotations

import argparse
from collections import Counter

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def app() -> web.Application:
    names: Counter[str] = Counter()
    requests = 0

    async def traces(request: web.Request) -> web.Response:
        nonlocal requests
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        requests += 1
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                names.update(span.name for span in scope.spans)
        return web.Response(status=200, content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": requests, "spans": sum(names.values()), "by_name": dict(names)}
        )

    application = web.Application(client_max_size=64 * 2**20)
    application.router.add_post("/v1/traces", traces)
    application.router.add_get("/stats", stats)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
