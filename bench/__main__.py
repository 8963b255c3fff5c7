"""``python -m bench``: the in-process micro-benchmarks, side by side, as ratios.

Writes ``bench/results/micro-<UTC time>.json`` and prints a table. Rounds alternate the
candidates (A B C A B C …) so that a noisy neighbour hurts them all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bench import decoding, enact
from bench.stats import table

RESULTS = Path(__file__).with_name("results")
#: The issue's target for NO_OP actions through enact(), in-process.
NO_OP_TARGET_PER_S = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7, help="rounds per candidate (default: 7)")
    args = parser.parse_args()

    machine = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "msgspec": msgspec.__version__,
    }
    print(f"machine: {machine}")

    enacted = enact.measure(args.rounds)
    print(f"\nenact() in-process, {enact.ACTIONS:,} actions per round, {args.rounds} rounds")
    print(table(enacted, baseline=enacted[0].name))
    no_op = enacted[0].median
    verdict = "meets" if no_op >= NO_OP_TARGET_PER_S else "MISSES"
    print(f"  NO_OP target {NO_OP_TARGET_PER_S:,} actions/s: {verdict} ({no_op:,.0f})")

    decoded = decoding.measure(args.rounds)
    print(
        f"\nplan decoding + validation, {decoding.PLANS:,} plans of "
        f"{decoding.ACTIONS_PER_PLAN} actions per round, {args.rounds} rounds"
    )
    print(table(decoded, baseline=decoded[0].name))

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"micro-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "when": stamp,
                "command": "python -m bench " + " ".join(sys.argv[1:]),
                "machine": machine,
                "enact": [m.as_dict() for m in enacted],
                "decoding": [m.as_dict() for m in decoded],
            },
            indent=2,
        )
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
