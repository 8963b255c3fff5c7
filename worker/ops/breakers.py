"""Circuit breakers, for the people on call: which are open, and closing one by hand.

The breakers live in the worker, rebuilt from ``N.results.log`` like every guardrail. This
module rebuilds them the same way, through the optimiser's own ``learn()``: it reads the
stream from ``now - breaker window`` up to its last message, and ``N.control`` for the resets
operators made. A reset is a ``ControlMessage`` (``reset_breaker``) on ``N.control``: every
worker of the namespace closes that breaker and forgives its failures up to then.
"""

from __future__ import annotations

from datetime import timedelta

import aiormq

from schemas import ActionKind
from schemas.control import ControlCommand, ControlMessage
from schemas.names import Names
from worker.amqp.connection import one_shot
from worker.amqp.control import ControlFollower
from worker.amqp.offsets import last_offset
from worker.amqp.state import StateFollower
from worker.core.clock import SystemClock
from worker.core.errors import OptimiserError
from worker.core.guards import BreakerView
from worker.core.memory import RecordMemory
from worker.core.optimiser import AsyncSelfOptimiser
from worker.ops.control import follow_control, send_control
from worker.settings import WorkerSettings


async def read_breakers(settings: WorkerSettings) -> list[BreakerView]:
    """The breakers of the namespace that are open or half-open now."""
    names = Names(settings.namespace)
    config = settings.optimiser
    clock = SystemClock()
    optimiser = AsyncSelfOptimiser(config=config, clock=clock)
    window_s = config.breaker_window_s + config.breaker_cool_off_s
    memory = RecordMemory(window_s=window_s, limit=settings.remember_limit, clock=clock)
    state = StateFollower(memory, optimiser, names, clock=clock)
    control = ControlFollower(names, optimiser)
    async with one_shot(settings, "breakers-cli") as connection:
        try:
            end = await last_offset(connection, names.results_log)
            await state.follow(connection, offset=clock.now() - timedelta(seconds=window_s))
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise OptimiserError(
                f"namespace {names.namespace!r} has no state stream yet: start "
                f"`self-optimiser run` once so that it declares it"
            ) from None
        await follow_control(connection, control, settings.state_timeout_s)
        if end >= 0:
            await state.read_through(end, settings.state_timeout_s)
        await state.close()
        await control.close()
        return optimiser.breakers()


async def reset_breaker(
    settings: WorkerSettings, module: str, kind: ActionKind, *, reason: str, issued_by: str
) -> ControlMessage:
    """Close the breaker of (module, kind) on every worker of the namespace."""
    return await send_control(
        settings,
        ControlCommand.RESET_BREAKER,
        reason=reason,
        issued_by=issued_by,
        module=module,
        action_kind=kind,
    )


def format_breakers(views: list[BreakerView]) -> str:
    """The breakers as aligned lines for a terminal."""
    width = max(len("MODULE"), *(len(v.module) for v in views))
    lines = [f"{'STATE':<10} {'KIND':<16} {'MODULE':<{width}} {'OPENED':<20} UNTIL"]
    lines += [
        f"{v.state:<10} {v.action_kind.value:<16} {v.module:<{width}} {v.opened_at:<20} {v.until}"
        for v in views
    ]
    return "\n".join(lines)
