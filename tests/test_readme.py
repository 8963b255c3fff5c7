"""The README's tables and commands stay true to the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from schemas import ActionKind, EnactmentStatus
from worker import OptimiserConfig
from worker.core.guards import GATES

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", dataclasses.fields(OptimiserConfig), ids=lambda f: f.name)
def test_every_config_field_is_in_the_readme_with_its_default(
    field: dataclasses.Field[object],
) -> None:
    row = re.search(rf"^\| `{field.name}` \| `([^`]*)` \|", README, re.MULTILINE)
    assert row, f"README has no row for OptimiserConfig.{field.name}"
    assert row.group(1) == repr(field.default)


@pytest.mark.parametrize("name", [*ActionKind, *EnactmentStatus], ids=str)
def test_every_kind_and_status_has_a_row(name: str) -> None:
    assert re.search(rf"^\| `{name}` \|", README, re.MULTILINE), f"README has no row for {name}"


def test_the_gate_table_lists_every_gate_of_the_registry_in_its_order() -> None:
    named = re.findall(r"^\| \d+ \| [^|]*\(`(\w+)`\) \|", README, re.MULTILINE)
    assert tuple(named) == GATES


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make check"]
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci_script.rstrip().splitlines()[-1] == "make check"
