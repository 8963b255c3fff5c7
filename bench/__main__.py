"""``python -m bench``: the worker measured side by side, as ratios.

In-process (``--micro``): ``enact()`` actions/s, and plan decoding with msgspec against the
alternatives. End to end (``--e2e``, needs RabbitMQ): ``self-optimiser run`` against a bare
aio-pika relay and a FastStream relay, with curves for actions per plan, prefetch and the plans
queue's type, latency at idle and at half of peak, resident memory against backlog, and
start-up with a day of records to replay (``bench/e2e.py`` says how). Without a flag, both.

Rounds alternate the candidates (A B C A B C …) so that a noisy neighbour hurts them all alike.
Writes ``bench/results/bench-<UTC time>.json`` (every figure), ``.md`` (the tables) and ``.png``
(the plot), and prints the tables and the verdict on each target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aio_pika

from bench import decoding, e2e, enact, report
from bench.stats import table

RESULTS = Path(__file__).with_name("results")
#: The issue's target for NO_OP actions through enact(), in-process.
NO_OP_TARGET_PER_S = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--micro", action="store_true", help="only the in-process benchmarks")
    parser.add_argument("--e2e", action="store_true", help="only the end-to-end benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny sizes, one round (no conclusions)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the head-to-head")
    parser.add_argument(
        "--url",
        default=os.environ.get("OPTIMISER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="broker for --e2e (default: OPTIMISER_AMQP_URL or the local one)",
    )
    args = parser.parse_args()
    both = not (args.micro or args.e2e)
    budget = e2e.Budget.quick() if args.quick else e2e.Budget()
    if args.rounds:
        budget = e2e.Budget(**{**budget.__dict__, "rounds": args.rounds})

    results: dict[str, Any] = {"command": "python -m bench " + " ".join(sys.argv[1:])}
    results["machine"] = machine = _machine()
    print(f"machine: {machine}")
    if args.micro or both:
        results["micro"] = _micro(1 if args.quick else 7)
    if args.e2e or both:
        results["machine"]["broker"] = broker = asyncio.run(_broker_version(args.url))
        print(f"broker: {broker}\n\nend to end, {budget}")
        results["e2e"] = asyncio.run(e2e.run_all(args.url, budget))
        summary = report.summarise(results["e2e"], results.get("micro"))
        results["summary"] = summary
        tables = report.markdown(results["e2e"], summary)
        print("\n" + tables + "\n")
        for verdict, met in summary["verdicts"].items():
            print(f"  {'meets ' if met else 'MISSES'} {verdict}")
        print(
            f"  worker / relay {summary['worker_vs_relay']:.2f}x, worker / FastStream "
            f"{summary['worker_vs_faststream']:.2f}x, memory growth {summary['memory_growth']:+.1%}"
            + (
                f", optimiser share of the cost per action "
                f"{summary['optimiser_share_of_e2e_cost']:.1%}"
                if "optimiser_share_of_e2e_cost" in summary
                else ""
            )
        )

    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results["when"] = stamp
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")
    if "summary" in results:
        (RESULTS / f"bench-{stamp}.md").write_text(tables + "\n")
        report.plot(results["e2e"], results["summary"], RESULTS / f"bench-{stamp}.png")
        print(f"wrote {RESULTS / f'bench-{stamp}.md'} and .png")
    return 0


def _micro(rounds: int) -> dict[str, Any]:
    enacted = enact.measure(rounds)
    print(f"\nenact() in-process, {enact.ACTIONS:,} actions per round, {rounds} rounds")
    print(table(enacted, baseline=enacted[0].name))
    no_op = enacted[0].median
    verdict = "meets" if no_op >= NO_OP_TARGET_PER_S else "MISSES"
    print(f"  NO_OP target {NO_OP_TARGET_PER_S:,} actions/s: {verdict} ({no_op:,.0f})")

    decoded = decoding.measure(rounds)
    print(
        f"\nplan decoding + validation, {decoding.PLANS:,} plans of "
        f"{decoding.ACTIONS_PER_PLAN} actions per round, {rounds} rounds"
    )
    print(table(decoded, baseline=decoded[0].name))
    return {
        "enact": [m.as_dict() for m in enacted],
        "decoding": [m.as_dict() for m in decoded],
    }


def _machine() -> dict[str, Any]:
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        **{name: installed(name) for name in ("msgspec", "aio-pika", "aiormq", "faststream")},
    }


async def _broker_version(url: str) -> str:
    connection = await aio_pika.connect(url)
    try:
        properties = connection.transport.connection.server_properties  # type: ignore[union-attr]
        return f"RabbitMQ {properties.get('version')} on Erlang/OTP {_otp()}"
    finally:
        await connection.close()


def _otp() -> str:
    try:
        import subprocess  # noqa: PLC0415

        done = subprocess.run(
            ["erl", "-noshell", "-eval", "io:format(erlang:system_info(otp_release)), halt()."],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
