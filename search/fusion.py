"""Rank fusion and result shaping: reciprocal rank fusion, dense-list merging, grouping and paging."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

# The constant from Cormack, Clarke & Buettcher (SIGIR 2009); it damps the weight of the very first ranks
# so that one list's top item cannot outvote agreement between lists.
RRF_K = 60


def reciprocal_rank_fusion(rankings: Iterable[Sequence[int]], k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) into one: score(id) = sum over lists of w / (k + rank), rank from 1.

    An id repeated within one list counts only at its best rank. Ties are broken by the best single rank the id
    reached in any list, then by the id itself, so the result is deterministic.
    """
    rankings = list(rankings)
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    return weighted_rank_fusion([[(item, w) for item in ranking] for ranking, w in zip(rankings, weights)], k)


def weighted_rank_fusion(rankings: Iterable[Sequence[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """RRF where each entry carries its own weight: rankings of (id, weight) best first, score(id) = sum over
    lists of weight / (k + rank). Duplicates and ties as in `reciprocal_rank_fusion`."""
    if k <= 0:
        raise ValueError(f"rrf k must be positive, got {k}")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, (item, weight) in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], kv[0]))


def evidence(scored: Sequence[tuple[int, float]], floor: float) -> list[float]:
    """How strongly a channel vouches for each of its results (best first), in [0, 1]: the score's margin over
    the channel's chance floor, as a share of the margin of the query's best result in that channel.

    A result barely above chance weighs almost nothing, whatever its rank; the channel's best weighs 1. Without a
    finite floor, or when nothing clears it, every result weighs 1 (plain RRF).
    """
    if not scored:
        return []
    span = scored[0][1] - floor
    if not math.isfinite(floor) or not span > 0:
        return [1.0] * len(scored)
    return [min(max((s - floor) / span, 0.0), 1.0) for _, s in scored]


def evidence_fusion(lists: Sequence[Sequence[tuple[int, float]]], floors: Sequence[float],
                    k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse scored channel lists (best first) by RRF, each entry's vote weighted by its `evidence` above its
    channel's chance floor: a result that two channels find strongly outranks one that three find barely above
    chance, while ranks still decide between results of equal evidence."""
    if len(floors) != len(lists):
        raise ValueError(f"{len(floors)} floors for {len(lists)} lists")
    return weighted_rank_fusion([list(zip((c for c, _ in scored), evidence(scored, floor)))
                                 for scored, floor in zip(lists, floors)], k)


def merge_max(*lists: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    """Merge scored (id, score) lists keeping each id's highest score; best first, ties by id."""
    best: dict[int, float] = {}
    for scored in lists:
        for item, score in scored:
            if item not in best or score > best[item]:
                best[item] = float(score)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))


def best_per_group(items: Iterable[T], key: Callable[[T], object]) -> list[T]:
    """Keep the first (best) item of each group, preserving order: group-by-video on a ranked list."""
    seen: set = set()
    kept = []
    for item in items:
        group = key(item)
        if group not in seen:
            seen.add(group)
            kept.append(item)
    return kept


def page(items: Sequence[T], offset: int, k: int) -> list[T]:
    """The `k` items starting at `offset` (offset pagination); empty past the end."""
    if offset < 0 or k < 0:
        raise ValueError(f"offset and k must be >= 0, got offset={offset} k={k}")
    return list(items[offset:offset + k])


# ---- how much of a merged list is final --------------------------------------------------------------------------
# Sources are searched to a depth n. Merging truncated scored lists is exact only down to a point: an item that one
# list has not reached yet may still outrank the tail. This gives that point, so a caller can search deeper when
# filters leave too few final results. A list is "dry" when it returned everything its source holds.

def settled_max(lists: Sequence[tuple[Sequence[tuple[int, float]], bool]],
                merged: Sequence[tuple[int, float]]) -> int:
    """How many leading items of `merge_max` over (list, dry) pairs are in their final order.

    An unseen item scores at most the last score of a list that is not dry, so everything scoring at least the
    highest such last score is final.
    """
    open_tails = [scored[-1][1] for scored, dry in lists if not dry and scored]
    if not open_tails:
        return len(merged)
    threshold = max(open_tails)
    settled = 0
    for _, score in merged:
        if score < threshold:
            break
        settled += 1
    return settled
