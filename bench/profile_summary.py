"""Summarise py-spy raw (collapsed) stacks: the functions with the most samples, both
self and inclusive, so a profile reads in a terminal."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def main() -> None:
    path, top = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
            for f in stack.split(";")
        ]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"{path.name}: {samples} samples")
    print("  self:")
    for frame, n in own.most_common(top):
        print(f"    {100 * n / samples:5.1f}%  {frame}")
    print("  inclusive:")
    for frame, n in total.most_common(top):
        print(f"    {100 * n / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
