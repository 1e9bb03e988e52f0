"""Reading a webhook's answer: the whole body up to the limit, never just what is buffered.

An answer arrives in as many chunks as the endpoint writes; one `read(n)` returns what has
arrived so far. The body is read until its end or until one byte beyond the limit, so the
stored text is the whole answer, or its first `limit` bytes followed by `[truncated]` and
never a silent prefix. Bytes that are not UTF-8 are replaced (U+FFFD); nothing else is
changed here.
"""

from __future__ import annotations

from typing import Protocol

TRUNCATED = "\n[truncated]"


class ByteStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...

    def at_eof(self) -> bool: ...


async def read_up_to(stream: ByteStream, limit: int) -> tuple[bytes, bool]:
    """The stream's bytes until its end, at most `limit` of them; and whether there were more.
    An answer whole in its first chunk (the usual one) is read once, without a copy."""
    first = await stream.read(limit + 1)
    if len(first) > limit or stream.at_eof() or not first:
        return first[:limit], len(first) > limit
    data = bytearray(first)
    while len(data) <= limit:
        chunk = await stream.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data[:limit]), len(data) > limit


async def read_answer(stream: ByteStream, limit: int) -> str:
    """The answer as text, marked `[truncated]` when it was longer than `limit` bytes."""
    data, truncated = await read_up_to(stream, limit)
    text = data.decode("utf-8", errors="replace")
    return text + TRUNCATED if truncated else text
