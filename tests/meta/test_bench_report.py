"""The bench's verdicts are derived from what it measured: the reference run's summary is
what ``bench.report.summarise`` makes of its figures, and each issue target has a verdict."""

from __future__ import annotations

import json
from typing import Any

from bench.e2e import RELAY, WORKER
from bench.report import summarise
from tests.support.paths import ROOT

REFERENCE = ROOT / "bench" / "reference"


def _reference() -> dict[str, Any]:
    (path,) = sorted(REFERENCE.glob("bench-*.json"))
    reference: dict[str, Any] = json.loads(path.read_text())
    return reference


def test_the_reference_summary_is_what_its_figures_give() -> None:
    reference = _reference()
    assert summarise(reference["e2e"], reference["micro"]) == reference["summary"]


def test_idle_p99_compares_each_candidate_at_its_lowest_rate() -> None:
    reference = _reference()
    e2e = reference["e2e"]
    e2e["latency"] = [
        {"candidate": RELAY, "plans_per_s": 10.0, "p50_ms": 5.0, "p99_ms": 10.0},
        {"candidate": RELAY, "plans_per_s": 300.0, "p50_ms": 50.0, "p99_ms": 900.0},
        {"candidate": WORKER, "plans_per_s": 400.0, "p50_ms": 5.0, "p99_ms": 1.0},
        {"candidate": WORKER, "plans_per_s": 10.0, "p50_ms": 6.0, "p99_ms": 13.0},
    ]
    summary = summarise(e2e, reference["micro"])
    assert summary["idle_p99_vs_relay"] == 1.3
    assert summary["verdicts"]["idle p99 <= 1.2x the relay's"] is False
    e2e["latency"][3]["p99_ms"] = 12.0
    assert summarise(e2e, reference["micro"])["verdicts"]["idle p99 <= 1.2x the relay's"]


def test_every_target_of_the_issue_has_a_verdict() -> None:
    verdicts = _reference()["summary"]["verdicts"]
    for target in ("1.0x the aio-pika relay", "1.3x the FastStream relay", "stretch",
                   "at one action a plan", "idle p99", "restart with", "memory flat"):  # fmt: skip
        assert any(target in verdict for verdict in verdicts), target
