"""The worker's exceptions: one root, so callers can catch everything of ours in one place."""

from __future__ import annotations


class OptimiserError(Exception):
    """Root of every error the self-optimiser raises on purpose."""


class ConfigError(OptimiserError, ValueError):
    """A setting is missing, malformed or out of its allowed range."""


class ParameterError(OptimiserError, ValueError):
    """An action's parameter cannot be parsed or is out of its allowed range."""


class SubsystemUnavailable(OptimiserError):
    """No subsystem can take this action here; the action is SKIPPED, not FAILED."""


class PlanLost(OptimiserError):
    """The plan stopped being this worker's before an action took effect: nothing was done,
    and the action gets no record here (whoever has the plan now enacts it)."""
