"""Timing helpers: run candidates in alternation, report median and spread."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Rates (units per second) of one candidate over several rounds."""

    name: str
    unit: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the rounds disagree."""
        return (max(self.rates) - min(self.rates)) / self.median

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median_per_s": self.median,
            "spread": self.spread,
            "rounds_per_s": self.rates,
        }


def alternate(
    candidates: dict[str, Callable[[], int]], *, rounds: int, unit: str
) -> list[Measurement]:
    """Run each candidate once per round, A B C A B C …; each call returns the units it did."""
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            units = run()
            rates[name].append(units / (time.perf_counter() - started))
    return [Measurement(name, unit, values) for name, values in rates.items()]


def table(measurements: list[Measurement], *, baseline: str) -> str:
    """A plain-text table with each candidate's ratio to ``baseline``."""
    base = next(m.median for m in measurements if m.name == baseline)
    width = max(len(m.name) for m in measurements)
    lines = [f"  {'candidate':<{width}}  {'median':>20}  {'spread':>7}  {'vs ' + baseline}"]
    for m in measurements:
        rate = f"{m.median:,.0f} {m.unit}/s"
        lines.append(f"  {m.name:<{width}}  {rate:>20}  {m.spread:>7.1%}  {m.median / base:.2f}x")
    return "\n".join(lines)
