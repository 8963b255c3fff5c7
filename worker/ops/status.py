"""``self-optimiser status``: the pause state, the open breakers and the depth of every queue
people watch."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import msgspec

from schemas.control import ControlCommand
from schemas.names import Names
from worker.amqp.connection import one_shot
from worker.amqp.control import describe
from worker.amqp.topology import queue_states
from worker.ops.breakers import format_breakers, read_breakers
from worker.ops.control import read_control
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


async def show_status(
    settings: WorkerSettings, *, as_json: bool, out: Callable[[str], None] = print
) -> None:
    """The pause state and the depth of every queue people watch, read from the broker."""
    names = Names(settings.namespace)
    control = await read_control(settings)
    breakers = await read_breakers(settings)
    async with one_shot(settings, "status-cli") as connection:
        states = await queue_states(connection, names.watched)
    if as_json:
        report = {
            "namespace": names.namespace,
            "paused": control is not None and control.command is ControlCommand.PAUSE,
            "control": msgspec.to_builtins(control) if control else None,
            "queues": {
                label: (
                    {"name": names.watched[label], "messages": s.messages, "consumers": s.consumers}
                    if s
                    else None
                )
                for label, s in states.items()
            },
            "breakers": [dataclasses.asdict(view) for view in breakers],
        }
        out(msgspec.json.encode(report).decode())
        return
    out(f"namespace {names.namespace} on {settings.safe_url}")
    out(f"  state    {describe(control)}")
    if breakers:
        out(f"  breakers {len(breakers)} open (`self-optimiser breakers reset MODULE KIND`):")
        for line in format_breakers(breakers).splitlines():
            out(f"    {line}")
    else:
        out("  breakers none open")
    for label, state in states.items():
        queue = names.watched[label]
        if state is None:
            out(f"  {label:<8} {queue}: does not exist (start `self-optimiser run` once)")
            continue
        line = f"  {label:<8} {queue}: {state.messages} ready"
        if label == "plans":
            line += (
                f", {state.consumers} worker(s) consuming (one active, the others on standby)"
                if state.consumers
                else ", NO worker consuming"
            )
        out(line)
