"""The benchmarks keep working: a smoke run of ``python -m bench --e2e --quick`` on the real
broker. It asserts what was measured exists and is sane, never how fast anything was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.e2e import CANDIDATES
from tests.support.paths import ROOT


def test_the_quick_end_to_end_bench_measures_every_candidate(amqp_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--e2e", "--quick", "--url", amqp_url],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    written = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wrote ")]
    results = json.loads(Path(written[0]).read_text())
    runs = results["e2e"]["runs"]
    assert {r["candidate"] for r in runs} == set(CANDIDATES)
    assert all(r["actions_per_s"] > 0 for r in runs)
    # CPU time comes from /proc in clock ticks (10 ms): the quick run's few hundred actions
    # on a fast relay can take less than one tick, so 0 is a measurement, not a missing one.
    assert all(r["cpu_us_per_action"] >= 0 for r in runs)
    assert {x["candidate"] for x in results["e2e"]["latency"]} == set(CANDIDATES)
    assert all(m["peak_rss_mb"] > 0 for m in results["e2e"]["memory"])
    assert [s["records"] for s in results["e2e"]["startup"]] == [0, 1_000]
    assert all(s["peak_rss_mb"] > 0 for s in results["e2e"]["startup"])
    assert all(s["checkpoint_peak_rss_mb"] > 0 for s in results["e2e"]["startup"])
    assert results["machine"]["broker"].startswith("RabbitMQ ")
    assert "worker_vs_relay" in results["summary"]
    png = Path(written[0]).with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG")
    for produced in (Path(written[0]), png, png.with_suffix(".md")):
        produced.unlink()


def test_two_builds_of_the_worker_are_measured_side_by_side(amqp_url: str) -> None:
    worker = shutil.which("self-optimiser", path=str(Path(sys.executable).parent))
    assert worker, "the virtual environment has the self-optimiser command"
    done = subprocess.run(
        [sys.executable, "-m", "bench.versus", worker, worker, "--quick", "--url", amqp_url],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    written = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wrote ")]
    results = json.loads(Path(written[0]).read_text())
    for per_plan in ("10", "1"):
        runs = results[per_plan]["runs"]
        assert set(runs) == {"old worker", "new worker", "aio-pika relay"}
        assert all(run["actions_per_s"] > 0 for rounds in runs.values() for run in rounds)
        assert results[per_plan]["new_vs_old"] > 0
    Path(written[0]).unlink()
