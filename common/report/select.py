"""Which queries a report shows: the best, the worst and a seeded random sample, by target rank."""
from __future__ import annotations

import random
from typing import Sequence


def split_count(count: int, parts: int) -> list[int]:
    """``count`` shared between ``parts`` as evenly as possible, the first parts getting the remainder."""
    return [count // parts + (index < count % parts) for index in range(parts)]


def select_queries(ranks: Sequence[float], count: int, modes: Sequence[str], seed: int) -> list[tuple[int, str]]:
    """Up to ``count`` (query index, why) pairs, no query twice, in the order of ``modes``.

    ``best``: lowest ranks first, ``worst``: highest ranks first (ties by index), ``random``: a sample seeded by
    ``seed`` of the queries not already picked. ``count`` is shared between the modes (``split_count``).
    """
    order = sorted(range(len(ranks)), key=lambda index: (ranks[index], index))
    pools = {"best": order, "worst": sorted(order, key=lambda index: (-ranks[index], index))}
    picked: dict[int, str] = {}
    for mode, wanted in zip(modes, split_count(min(count, len(ranks)), len(modes))):
        if mode == "random":
            rest = [index for index in range(len(ranks)) if index not in picked]
            chosen = random.Random(seed).sample(rest, min(wanted, len(rest)))
        else:
            chosen = [index for index in pools[mode] if index not in picked][:wanted]
        picked.update((index, mode) for index in chosen)
    return list(picked.items())
