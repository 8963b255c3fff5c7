"""``OptimiserConfig``: the guardrails every ``enact()`` call runs under."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from worker.core.errors import ConfigError
from worker.core.parameters import Allowed

T = TypeVar("T")


def setting(default: T, help: str) -> T:
    """A dataclass field with a default and the one-line help that ``--help`` and docs show."""
    described: Any = field(default=default, metadata={"help": help})
    return described  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class OptimiserConfig:
    """Guardrails and bounds of the optimiser. Invalid combinations raise ``ConfigError``."""

    max_enactments_per_cycle: int = setting(
        10, "Most records one ``enact()`` call returns; later actions are not looked at."
    )
    max_hot_swap_per_cycle: int = setting(
        1, "Most HOT_SWAP_MODULE actions dispatched per call; later ones are SKIPPED."
    )
    cool_down_s: float = setting(
        300.0, "After a SUCCESS, the setting it moved is RATE_LIMITED for this many seconds."
    )
    enable_rate_limit: bool = setting(True, "Turn the cool-down gate off entirely.")
    dry_run: bool = setting(
        False, "Record what would be done (SKIPPED) without touching any subsystem."
    )
    subsystem_timeout_s: float = setting(
        30.0, "A subsystem that has not answered after this many seconds makes the action FAILED."
    )
    default_suggested_delta: float = setting(
        0.1, "TUNE_THRESHOLD: relative change of the p95 threshold when the action names none."
    )
    min_suggested_delta: float = setting(
        -0.5, "TUNE_THRESHOLD: smallest allowed ``suggested_delta``; below it the action FAILS."
    )
    max_suggested_delta: float = setting(
        1.0, "TUNE_THRESHOLD: largest allowed ``suggested_delta``; above it the action FAILS."
    )
    threshold_floor_ms: float = setting(
        50.0, "TUNE_THRESHOLD: a tuned p95 threshold never goes below this (ms)."
    )
    threshold_ceiling_ms: float = setting(
        60_000.0, "TUNE_THRESHOLD: a tuned p95 threshold never goes above this (ms)."
    )
    default_budget_factor: float = setting(
        1.5, "INCREASE_BUDGET: the factor used when the action names none."
    )
    min_budget_factor: float = setting(
        1.0, "INCREASE_BUDGET: smallest allowed ``budget_factor``; below it the action FAILS."
    )
    max_budget_factor: float = setting(
        4.0, "INCREASE_BUDGET: largest allowed ``budget_factor``; above it the action FAILS."
    )
    default_budget_s: float = setting(
        1.0, "INCREASE_BUDGET: the budget (s) of a module that has none yet."
    )
    budget_floor_s: float = setting(0.01, "INCREASE_BUDGET: a budget never goes below this (s).")
    budget_ceiling_s: float = setting(60.0, "INCREASE_BUDGET: a budget never goes above this (s).")
    detector_scope: str = setting(
        "cycle",
        "TUNE_THRESHOLD moves one detector threshold for the whole cycle (cycle), or one per "
        "module (module).",
    )
    bound_factor: float = setting(
        2.0,
        "A setting moves at most this factor up or down within any bound_period_s; a larger "
        "move is trimmed to what is left, and refused when nothing is left.",
    )
    bound_period_s: float = setting(
        600.0, "The sliding period of bound_factor, in seconds; 0 turns the bound off."
    )
    stabilization_window_s: float = setting(
        600.0,
        "A change that would reverse the last change of a setting this recently is "
        "RATE_LIMITED; 0 turns that off.",
    )
    swap_budget: int = setting(
        3, "Most hot swaps (SUCCESS or FAILED) across all modules within swap_budget_window_s."
    )
    swap_budget_window_s: float = setting(
        600.0, "The sliding window of swap_budget, in seconds; 0 turns the budget off."
    )
    change_budget: int = setting(
        20,
        "Most changes (tunings, budgets, load sheds, swaps; SUCCESS or FAILED) across the "
        "namespace within change_budget_window_s.",
    )
    change_budget_window_s: float = setting(
        600.0, "The sliding window of change_budget, in seconds; 0 turns the budget off."
    )
    breaker_failures: int = setting(
        3,
        "This many FAILED records of one (module, kind) within breaker_window_s open its "
        "circuit breaker (and send one review item); 0 turns breakers off.",
    )
    breaker_window_s: float = setting(600.0, "The window in which breaker_failures are counted.")
    breaker_cool_off_s: float = setting(
        600.0, "An open breaker lets one trial through after this many seconds (half-open)."
    )

    @property
    def suggested_delta(self) -> Allowed:
        """TUNE_THRESHOLD's ``suggested_delta``: its default and range."""
        return Allowed(
            self.default_suggested_delta, self.min_suggested_delta, self.max_suggested_delta
        )

    @property
    def budget_factor(self) -> Allowed:
        """INCREASE_BUDGET's ``budget_factor``: its default and range."""
        return Allowed(self.default_budget_factor, self.min_budget_factor, self.max_budget_factor)

    def __post_init__(self) -> None:
        for each in fields(self):
            value = getattr(self, each.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{each.name} must be a finite number, not {value}")
        _require(self.max_enactments_per_cycle >= 1, "max_enactments_per_cycle must be >= 1")
        _require(self.max_hot_swap_per_cycle >= 0, "max_hot_swap_per_cycle must be >= 0")
        _require(self.cool_down_s >= 0, "cool_down_s must be >= 0")
        _require(self.subsystem_timeout_s > 0, "subsystem_timeout_s must be > 0")
        _require(
            -1
            < self.min_suggested_delta
            <= self.default_suggested_delta
            <= self.max_suggested_delta,
            "need -1 < min_suggested_delta <= default_suggested_delta <= max_suggested_delta",
        )
        _require(
            0 < self.threshold_floor_ms <= self.threshold_ceiling_ms,
            "need 0 < threshold_floor_ms <= threshold_ceiling_ms",
        )
        _require(
            0 < self.min_budget_factor <= self.default_budget_factor <= self.max_budget_factor,
            "need 0 < min_budget_factor <= default_budget_factor <= max_budget_factor",
        )
        _require(
            0 < self.budget_floor_s <= self.default_budget_s <= self.budget_ceiling_s,
            "need 0 < budget_floor_s <= default_budget_s <= budget_ceiling_s",
        )
        _require(
            self.detector_scope in ("cycle", "module"),
            f"detector_scope must be 'cycle' or 'module', not {self.detector_scope!r}",
        )
        _require(self.bound_factor > 1, "bound_factor must be > 1")
        for name in (
            "bound_period_s", "stabilization_window_s", "swap_budget_window_s",
            "change_budget_window_s", "breaker_window_s", "breaker_cool_off_s",
        ):  # fmt: skip
            _require(getattr(self, name) >= 0, f"{name} must be >= 0")
        for name in ("swap_budget", "change_budget", "breaker_failures"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
