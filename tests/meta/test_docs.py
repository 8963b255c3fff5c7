"""The docs' tables stay true to the code: every setting, kind, status, gate and fate, and
every room of the layout."""

from __future__ import annotations

import dataclasses
import re

import pytest

from schemas import ActionKind, EnactmentStatus
from tests.support.paths import ROOT
from worker import OptimiserConfig
from worker.amqp.outcome import Fate
from worker.core.guards import GATES

GUARDRAILS = (ROOT / "docs" / "guardrails.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", dataclasses.fields(OptimiserConfig), ids=lambda f: f.name)
def test_every_config_field_is_in_the_guardrails_page_with_its_default(
    field: dataclasses.Field[object],
) -> None:
    row = re.search(rf"^\| `{field.name}` \| `([^`]*)` \|", GUARDRAILS, re.MULTILINE)
    assert row, f"docs/guardrails.md has no row for OptimiserConfig.{field.name}"
    assert row.group(1) == repr(field.default)


@pytest.mark.parametrize("name", [*ActionKind, *EnactmentStatus], ids=str)
def test_every_kind_and_status_has_a_row(name: str) -> None:
    assert re.search(rf"^\| `{name}` \|", GUARDRAILS, re.MULTILINE), f"no row for {name}"


def test_the_gate_table_lists_every_gate_of_the_registry_in_its_order() -> None:
    named = re.findall(r"^\| \d+ \| [^|]*\(`(\w+)`\) \|", GUARDRAILS, re.MULTILINE)
    assert tuple(named) == GATES


def test_every_fate_of_a_delivery_is_in_the_metrics_page() -> None:
    metrics = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    line = next(line for line in metrics.splitlines() if "plans_consumed_total" in line)
    paragraph = metrics[metrics.index(line) :][:300]
    assert [fate for fate in Fate if f"`{fate}`" not in paragraph] == []


def test_the_architecture_page_names_every_room() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rooms = [p.name for p in (ROOT / "worker").iterdir() if (p / "__init__.py").exists()]
    assert rooms
    for room in rooms:
        assert f"| `worker/{room}/` |" in architecture, f"docs/architecture.md: no row for {room}"


PAGES = [
    "README.md",
    "bench/README.md",
    "deploy/README.md",
    *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
]


@pytest.mark.parametrize("page", PAGES)
def test_every_file_of_the_repository_a_page_names_is_there(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    named = set(
        re.findall(
            r"(?<![\w/.])((?:worker|schemas|tests|bench|deploy)/[\w/.-]+\.(?:py|md|yml|json))", text
        )
    )
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == [], f"{page} names files that are not there"
