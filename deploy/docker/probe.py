#!/usr/bin/env python3
"""Container health probe, standard library only (the image has no curl).

    webhook-router-probe URL                  healthy when a GET of URL answers 2xx
    webhook-router-probe --listening HOST:PORT  healthy when HOST:PORT accepts a connection

Exit 0 when healthy, 1 with one line on stderr saying why not.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request

TIMEOUT = 4.0


def probe(args: list[str]) -> str | None:
    """Why the target is not healthy, or None when it is."""
    if len(args) == 2 and args[0] == "--listening":
        host, _, port = args[1].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), TIMEOUT):
                return None
        except (OSError, ValueError) as exc:
            return f"{args[1]}: {exc}"
    if len(args) == 1:
        try:
            with urllib.request.urlopen(args[0], timeout=TIMEOUT) as answer:
                return None if 200 <= answer.status < 300 else f"{args[0]}: {answer.status}"
        except urllib.error.HTTPError as exc:
            return f"{args[0]}: {exc.code} {exc.reason}"
        except (OSError, ValueError) as exc:
            return f"{args[0]}: {exc}"
    return "usage: webhook-router-probe URL | --listening HOST:PORT"


def main() -> None:
    why = probe(sys.argv[1:])
    if why is not None:
        print(f"unhealthy: {why}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
