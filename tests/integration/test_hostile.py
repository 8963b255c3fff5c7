"""A hostile planner against the real worker, with the default guardrails, on the real broker.

Workers run as processes, as users start them; the subsystem is served in the test process and
keeps score of everything that reaches it. Between three rounds of hostile plans the active
worker is SIGKILLed (its standby takes over), then the standby is SIGKILLed and a fresh worker
started: the guardrails' state must come through both, read from the state stream.
"""

from __future__ import annotations

import pytest

from schemas import ActionKind, EnactmentStatus, decode_action
from tests.support.broker import Broker
from tests.support.hostile import BROKEN, Scoreboard, hostile_plan
from tests.support.processes import WorkerProcess
from tests.support.records import RecordLog
from tests.support.workers import ServerStarter
from worker import Subsystems

PLANS_PER_ROUND = 5


async def _round(broker: Broker, log: RecordLog, prefix: str, *, first: bool = False) -> None:
    plans = [
        hostile_plan(f"{prefix}{n}", broken_first=first and n == 0) for n in range(PLANS_PER_ROUND)
    ]
    for plan in plans:
        await broker.publish_plan(plan)
    await log.until_all(
        {a["action_id"] for p in plans for a in p["actions"]}  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    ("settings", "refusals"),
    [
        # The defaults: the per-setting cool-down (300 s) stops the threshold first.
        ({}, {"cool_down", "swap_budget"}),
        # A cool-down lowered to nothing: the bound and the stabilization window hold alone.
        ({"cool_down_s": "0"}, {"bound", "stabilization", "swap_budget"}),
    ],
    ids=["defaults", "no-cool-down"],
)
async def test_a_hostile_planner_stays_within_every_bound_across_a_kill_and_a_failover(
    broker: Broker,
    amqp_url: str,
    serve: ServerStarter,
    settings: dict[str, str],
    refusals: set[str],
) -> None:
    board = Scoreboard()
    await serve(Subsystems(detector=board, budget=board, load=board, orchestrator=board))
    log = RecordLog()
    await log.follow(await broker.results_queue())
    namespace = broker.names.namespace

    active = await WorkerProcess(amqp_url, namespace, **settings).start()
    await active.wait_consuming()
    standby = await WorkerProcess(amqp_url, namespace, **settings).start()
    await standby.wait_consuming()
    await _round(broker, log, "a", first=True)
    active.kill()  # the standby takes over
    await active.wait()
    await _round(broker, log, "b")
    standby.kill()  # and a fresh worker starts from the state stream
    await standby.wait()
    restarted = await WorkerProcess(amqp_url, namespace, **settings).start()
    await restarted.wait_consuming()
    await _round(broker, log, "c")
    assert await restarted.stop() == 0

    print(board.summary())
    values = [200.0] + [new for _, _, new in board.thresholds]
    # One setting, whatever the module names: at most x2 either way within 10 minutes...
    assert max(values) / 200.0 <= 2.0 + 1e-9
    assert 200.0 / min(values) <= 2.0 + 1e-9
    # ...and never back the other way inside its stabilization window.
    assert board.reversals() == 0
    # Hot swaps across modules, and changes across the namespace, within their budgets.
    assert len(board.swaps) <= 3
    assert len(board.calls) <= 20
    assert set(board.calls.values()) == {1}, "an action reached its subsystem twice"
    # The broken module was tried exactly three times; people heard of it exactly once.
    assert board.broken_attempts == 3
    items = [
        decode_action(m.body)
        for m in await broker.drain(broker.names.review_queue, expect=100, timeout=3)
    ]
    breaker_items = [i for i in items if i.parameters.get("guard") == "breaker"]
    assert len(breaker_items) == 1
    assert breaker_items[0].module_name == BROKEN
    assert breaker_items[0].parameters["action_kind"] == ActionKind.INCREASE_BUDGET
    # Every refusal is a record with its reason; after the kill and the restart as well.
    later = [r for r in log.records if r.action.module_name == BROKEN and r.plan_id[0] in "bc"]
    assert later
    assert all(r.status is EnactmentStatus.SKIPPED for r in later)
    assert all(r.detail.startswith("breaker open: 3 failures in 10 min") for r in later)
    refused = [r for r in log.records if r.status is EnactmentStatus.RATE_LIMITED]
    assert {r.guard for r in refused} >= refusals
