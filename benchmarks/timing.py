"""Bounded timing loops: every loop stops at a count and at a time budget, whichever comes first."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call(
    fn: Callable[[], object], *, count: int, rounds: int = 5, budget_s: float = 5.0
) -> float:
    """Median seconds per call of ``fn`` over ``rounds`` rounds of up to ``count`` calls each.

    The whole measurement stops after ``budget_s`` (a round in progress is cut short and counts
    with the calls it made).
    """
    fn()  # warm up: first calls pay for imports, caches, lazy loading
    results: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        while done < count:
            fn()
            done += 1
            if done % 64 == 0 and time.perf_counter() > deadline:
                break
        results.append((time.perf_counter() - start) / done)
        if time.perf_counter() > deadline:
            break
    return statistics.median(results)


def fmt_us(seconds: float) -> str:
    micro = seconds * 1e6
    return (
        f"{micro:.2f} µs"
        if micro < 10
        else f"{micro:.0f} µs"
        if micro >= 100
        else f"{micro:.1f} µs"
    )


def fmt_rate(per_second: float, unit: str) -> str:
    if per_second >= 100_000:
        return f"{per_second / 1000:,.0f} k {unit}/s"
    return f"{per_second:,.0f} {unit}/s"


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"
