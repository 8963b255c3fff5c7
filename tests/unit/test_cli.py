"""The command line: the in-process demo and the schema printer, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from schemas import EnactmentStatus
from tests.support.paths import ROOT
from worker.cli import main
from worker.demo.simulated import run_demo


async def test_the_demo_shows_every_status_and_moves_the_state() -> None:
    lines: list[str] = []

    report = await run_demo(duration_s=1.0, interval_s=0.0, seed=7, out=lines.append)

    assert report.plans > 10
    for status in EnactmentStatus:
        assert report.statuses[status.value] > 0, f"the demo never showed {status.value}"
    assert report.review_items > 0
    assert report.final_threshold_ms != 200.0
    assert report.final_budgets
    assert lines[-1].startswith(f"done: {report.plans} plans; SUCCESS ")


async def test_the_dry_run_demo_changes_nothing() -> None:
    report = await run_demo(
        duration_s=0.5, interval_s=0.0, seed=7, dry_run=True, out=lambda _: None
    )
    assert set(report.statuses) == {"SKIPPED"}
    assert report.review_items == 0
    assert report.final_threshold_ms == 200.0
    assert report.final_budgets == {}


def test_the_in_process_demo_command_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--in-process", "--duration", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "done:" in done.stdout


def test_schema_prints_a_schema_that_validates_the_example_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "plan"]) == 0
    schema = json.loads(capsys.readouterr().out)
    plan = json.loads((ROOT / "examples" / "plan.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(plan)


def test_schema_without_a_name_prints_all_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out.count('"$schema"') == 6


@pytest.mark.parametrize("duration", ["0", "-1", "soon", "inf"])
def test_a_bad_duration_is_refused_with_a_reason(
    duration: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--duration", duration])
    assert exited.value.code == 2
    assert "--duration" in capsys.readouterr().err
