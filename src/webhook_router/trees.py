"""Tree group and tree name of an event, and the workflow engine's run-tree path.

The name is the action; the group depends on the type (domain reference §2). Each of
source, group and name is percent-encoded on its own, so slugs containing `/`, `>`, `%`,
`#`, `?` or non-ASCII letters survive the trip to the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

RUN_TREE_PREFIX = "/app/api/v1/run-tree"


@dataclass(frozen=True, slots=True)
class Tree:
    group: str
    name: str

    def __str__(self) -> str:
        return f"{self.group} :: {self.name}"


def _slug(body: Mapping[str, Any], entity: str) -> str:
    value = body.get(entity)
    slug = value.get("slug") if isinstance(value, Mapping) else None
    return str(slug) if slug is not None else ""


def tree_of(type_name: str, action: str, body: Mapping[str, Any]) -> Tree:
    """The tree an event of `type_name`/`action` with this body is expected to run."""
    if type_name == "Space":
        group = "Space"
    elif type_name == "User":
        group = "Users"
    elif type_name == "Team":
        group = "Teams"
    elif type_name == "Datastore Form":
        group = f"Datastore Forms > {_slug(body, 'form')}"
    elif type_name == "Datastore Submission":
        group = f"Datastore Submissions > {_slug(body, 'form')}"
    elif type_name == "Form":
        group = f"{_slug(body, 'kapp')} > {_slug(body, 'form')}"
    elif type_name == "Submission":
        group = f"Submissions > {_slug(body, 'kapp')} > {_slug(body, 'form')}"
    elif type_name == "Webhook":
        group = "Webhooks"
    else:
        raise ValueError(f"unknown event type {type_name!r}")
    return Tree(group, action)


def run_tree_path(source: str, tree: Tree) -> str:
    """`/app/api/v1/run-tree/{source}/{group}/{name}`, each part encoded on its own."""
    parts = (quote(part, safe="") for part in (source, tree.group, tree.name))
    return "/".join((RUN_TREE_PREFIX, *parts))
