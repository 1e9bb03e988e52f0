"""A webhook's answer as the job log keeps it.

The HTTP client (http_client.py) reads an answer whole, in as many chunks as the endpoint
writes, until its end or one byte beyond the limit. The stored text is the whole answer, or
its first `limit` bytes followed by `[truncated]`, never a silent prefix. Bytes that are
not UTF-8 are replaced (U+FFFD); nothing else is changed here.
"""

from __future__ import annotations

TRUNCATED = "\n[truncated]"


def answer_text(body: bytes, truncated: bool) -> str:
    """The answer's bytes as text, marked `[truncated]` when there were more."""
    text = body.decode("utf-8", errors="replace")
    return text + TRUNCATED if truncated else text
