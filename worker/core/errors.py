"""The worker's exceptions: one root, so callers can catch everything of ours in one place."""

from __future__ import annotations

import asyncio


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


def cancelled_here() -> bool:
    """Whether the running task itself is being cancelled.

    aiormq fails what waits on a channel with ``CancelledError`` when it drops the channel or
    its connection (a missed heartbeat, the connection's reader cancelled): that is a failure
    of the broker's link, to be handled as one, not our cancellation, which must go through.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
