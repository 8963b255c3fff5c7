"""The command line's live demo against the test broker, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.paths import ROOT


def run_demo_command(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``self-optimiser demo ARGS`` against the test broker; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", *args],
        cwd=ROOT,
        env={**os.environ, "OPTIMISER_AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_live_demo_exits_zero_with_every_status_it_claims(amqp_url: str) -> None:
    done = run_demo_command(amqp_url, "--duration", "5", "--seed", "5")
    assert "namespace optimiser-demo-" in done.stdout
    summary = done.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(SUCCESS|FAILED|SKIPPED|RATE_LIMITED) (\d+)", summary))
    assert set(counts) == {"SUCCESS", "FAILED", "SKIPPED", "RATE_LIMITED"}
    assert all(int(n) > 0 for n in counts.values()), summary
    assert re.search(r"; [1-9]\d* sent for review; [1-9]\d* unreadable plan\(s\) parked$", summary)
    for status in counts:
        assert f"  {status} " in done.stdout  # and each shows as a record line


def test_the_live_dry_run_demo_enacts_nothing(amqp_url: str) -> None:
    done = run_demo_command(amqp_url, "--duration", "2", "--dry-run")
    assert "SUCCESS 0, FAILED 0, SKIPPED " in done.stdout
    assert "RATE_LIMITED 0; 0 sent for review" in done.stdout
