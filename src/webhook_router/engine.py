"""A small local workflow engine for the demo and the tests: it answers run-tree calls
as the real one does, "Initiated run #N", and 404 for trees it is told are missing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from webhook_router.trees import RUN_TREE_PREFIX


@dataclass
class Received:
    path: str
    source: str
    group: str
    name: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Engine:
    """Run-tree endpoint; `missing` trees answer 404 like the real engine."""

    missing: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    _runs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(RUN_TREE_PREFIX + "/{tail:.+}", self.run_tree)
        app.router.add_post("/{tail:.*}", self.elsewhere)
        return app

    async def elsewhere(self, request: web.Request) -> web.Response:
        """Any other path is recorded and answered 404, as the engine would."""
        body = await request.read()
        self.received.append(Received(request.raw_path, "", "", "", dict(request.headers), body))
        return web.json_response({"message": f"{request.path} does not exist"}, status=404)

    async def run_tree(self, request: web.Request) -> web.Response:
        raw = request.raw_path.split("?", 1)[0].removeprefix(RUN_TREE_PREFIX + "/")
        body = await request.read()
        parts = [unquote(part) for part in raw.split("/")]
        if len(parts) != 3:
            return web.json_response(
                {"message": "expected /run-tree/{source}/{group}/{name}"}, status=400
            )
        source, group, name = parts
        self.received.append(
            Received(request.raw_path, source, group, name, dict(request.headers), body)
        )
        title = f"{source} :: {group} :: {name}"
        if title in self.missing:
            return web.json_response({"message": f'The "{title}" tree does not exist.'}, status=404)
        run = next(self._runs)
        return web.json_response(
            {"message": f"Initiated run #{run} for the {title} tree.", "run": {"id": run}}
        )
