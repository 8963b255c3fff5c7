"""The subsystems the optimiser acts on, as ports, and where review items go.

A port applies the commands of the verbs its owner owns (``schemas.commands.OWNER``): the wire
``SubsystemCommand`` is the request, in-process as over AMQP, so there is one family of request
types. It answers with a ``SubsystemResult``. A port raises ``SubsystemUnavailable`` when it has
nothing to act on (the action is SKIPPED); any other exception, a timeout or
``succeeded=False`` makes the action FAILED. A command carries the action's ``action_id``, so a
remote subsystem can drop a duplicate.

In-process adapters for the seed's duck-typed objects live in ``worker.core.seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from schemas import ImprovementAction
from schemas.commands import Change, Subsystem, SubsystemCommand
from worker.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SubsystemResult:
    """A subsystem's answer: whether the change took, a line saying so, and what changed."""

    succeeded: bool
    detail: str
    change: Change | None = None


class Port(Protocol):
    """A subsystem: it applies the commands of the verbs it owns."""

    async def apply(self, command: SubsystemCommand) -> SubsystemResult: ...


class Subsystems(Mapping[Subsystem, Port]):
    """The ports an optimiser acts through, by owner; a missing one makes its kinds SKIPPED.

    ``Subsystems(detector=cycle, orchestrator=orchestrator)``, by the owners' names, or
    ``Subsystems({Subsystem.DETECTOR: cycle})``.
    """

    __slots__ = ("_ports",)

    def __init__(self, ports: Mapping[Subsystem, Port] | None = None, /, **named: Port) -> None:
        known = {subsystem.value: subsystem for subsystem in Subsystem}
        unknown = sorted(set(named) - set(known))
        if unknown:
            raise ConfigError(
                f"no subsystem is called {unknown[0]!r}: the owners are {', '.join(known)}"
            )
        self._ports: dict[Subsystem, Port] = dict(ports or {})
        self._ports.update({known[name]: port for name, port in named.items()})

    def __getitem__(self, owner: Subsystem) -> Port:
        return self._ports[owner]

    def __iter__(self) -> Iterator[Subsystem]:
        return iter(self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def __repr__(self) -> str:
        return f"Subsystems({', '.join(f'{s.value}={p!r}' for s, p in self._ports.items())})"


class ReviewSink(Protocol):
    """Where FLAG_FOR_REVIEW actions go for operators; raising means the item was not taken.

    ``proceed`` says whether the plan is still this worker's; a sink that cannot make the
    item idempotent at its reader asks it before the item goes out, and raises ``PlanLost``
    when it says no.
    """

    async def submit(
        self,
        action: ImprovementAction,
        *,
        plan_id: str,
        proceed: Callable[[], bool] | None = None,
    ) -> None: ...
