"""The verb table: a row for every kind, and what is derived from it holds together."""

from __future__ import annotations

import typing

import pytest

from schemas import ActionKind
from schemas.commands import OWNER, Arguments, Subsystem
from worker.core.config import OptimiserConfig
from worker.core.verbs import CHANGES, OWNER_NAMES, SCALES, VERBS


def test_every_kind_has_a_row_and_every_command_a_kind() -> None:
    assert set(VERBS) == set(ActionKind)
    commands = [verb.command for verb in VERBS.values() if verb.command is not None]
    assert sorted(c.__name__ for c in commands) == sorted(
        a.__name__ for a in typing.get_args(Arguments)
    )
    assert set(OWNER) == set(commands)


def test_the_kinds_that_change_something_are_those_with_an_owner() -> None:
    assert set(CHANGES) == {k for k, v in VERBS.items() if v.owner is not None}
    assert SCALES <= CHANGES
    assert {VERBS[kind].owner for kind in CHANGES} == set(Subsystem) == set(OWNER_NAMES)


@pytest.mark.parametrize("kind", sorted(SCALES), ids=str)
@pytest.mark.parametrize("factor", [0.5, 1.0, 1.75])
def test_a_numeric_move_scaled_by_a_factor_moves_by_that_factor(
    kind: ActionKind, factor: float
) -> None:
    verb = VERBS[kind]
    assert verb.read is not None
    assert verb.scaled is not None
    assert verb.factor is not None
    arguments = verb.read({}, OptimiserConfig())
    assert verb.factor(verb.scaled(arguments, factor)) == pytest.approx(factor)


@pytest.mark.parametrize("kind", list(ActionKind), ids=str)
def test_every_setting_names_its_module_or_the_one_it_shares(kind: ActionKind) -> None:
    setting = VERBS[kind].setting("m.x", OptimiserConfig())
    if kind is ActionKind.NO_OP:
        assert setting == ""
    elif kind is ActionKind.TUNE_THRESHOLD:  # the cycle has one threshold
        assert setting == "detector.p95_threshold_ms"
        scoped = VERBS[kind].setting("m.x", OptimiserConfig(detector_scope="module"))
        assert scoped == "detector.p95_threshold_ms[m.x]"
    else:
        assert setting.endswith("[m.x]")
