"""Two builds of the worker side by side: is a change within noise of the code before it?

    python -m bench.versus OLD NEW [--rounds 5] [--quick]

``OLD`` and ``NEW`` are ``self-optimiser`` executables (each from a checkout and virtual
environment of its own: ``git worktree add /tmp/old REV && make -C /tmp/old .venv/.installed``).
Each round runs the old worker, the new one and the aio-pika relay (the floor) on the same
backlog, the two workers' order alternating round by round, at 10 actions a plan and at one,
as ``bench.e2e.throughput`` measures them. It prints each run, then the medians and their
ratios, and writes ``bench/results/versus-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import e2e

OLD, NEW = "old worker", "new worker"
RESULTS = Path(__file__).parent / "results"


async def versus(url: str, builds: dict[str, str], *, rounds: int, quick: bool) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    for per_plan, total in ((10, 20_000), (1, 6_000)):
        scenario = e2e.Scenario(
            actions_per_plan=per_plan, total_actions=total // (10 if quick else 1)
        )
        runs: dict[str, list[dict[str, Any]]] = {OLD: [], NEW: [], e2e.RELAY: []}
        for number in range(rounds):
            workers = [OLD, NEW] if number % 2 == 0 else [NEW, OLD]
            for candidate in [*workers, e2e.RELAY]:
                run = await e2e.throughput(candidate, url, scenario, builds=builds)
                runs[candidate].append(run.as_dict())
                print(
                    f"{per_plan} action(s) a plan, round {number + 1}: {candidate} "
                    f"{run.actions_per_s:,.0f}/s, {run.cpu_us_per_action:.0f} µs CPU an action",
                    flush=True,
                )
        median = {c: statistics.median(r["actions_per_s"] for r in rs) for c, rs in runs.items()}
        measured[str(per_plan)] = {
            "runs": runs,
            "median_actions_per_s": median,
            "new_vs_old": median[NEW] / median[OLD],
            "old_vs_relay": median[OLD] / median[e2e.RELAY],
            "new_vs_relay": median[NEW] / median[e2e.RELAY],
        }
        print(
            f"{per_plan} action(s) a plan: new/old {median[NEW] / median[OLD]:.2f}x, "
            f"old/relay {median[OLD] / median[e2e.RELAY]:.2f}x, "
            f"new/relay {median[NEW] / median[e2e.RELAY]:.2f}x",
            flush=True,
        )
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__)
    parser.add_argument("old", help="the self-optimiser executable of the code before")
    parser.add_argument("new", help="the self-optimiser executable of the code after")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of the actions, one round")
    args = parser.parse_args()
    builds = {OLD: args.old, NEW: args.new}
    rounds = 1 if args.quick else args.rounds
    measured = asyncio.run(versus(args.url, builds, rounds=rounds, quick=args.quick))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"versus-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"builds": builds, "rounds": rounds, **measured}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
