"""Ranks in words, as the summaries of an incident write them: ``ranks 0-2, 5``.

Its own module because both rules' words use it (``incident`` for stacks,
``collective_phrases`` for flight recorders) and ``incident`` reads the collective
rule: kept in either, the two would import each other.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["count", "rank_ranges", "ranks_phrase"]


def ranks_phrase(ranks: Iterable[int | None]) -> str:
    """``[0, 1, 3, None]`` → ``"ranks 0-1, 3 and 1 unlabelled process"``."""
    ranks = list(ranks)
    known = sorted(rank for rank in ranks if rank is not None)
    unknown = sum(1 for rank in ranks if rank is None)
    words = []
    if known:
        words.append(("rank " if len(known) == 1 else "ranks ") + rank_ranges(known))
    if unknown:
        words.append(count(unknown, "unlabelled process"))
    return " and ".join(words)


def rank_ranges(ranks: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    spans: list[list[int]] = []
    for rank in sorted(set(ranks)):
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def count(n: int, noun: str) -> str:
    """``count(2, "process")`` → ``"2 processes"``."""
    return f"{n} {noun}{'es' if n != 1 and noun.endswith('s') else 's' if n != 1 else ''}"
