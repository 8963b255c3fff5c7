"""``self-optimiser``: the command line. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from schemas.jsonschema import MESSAGES, render
from worker.demo import run_demo

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("self-optimiser")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="self-optimiser",
        description=(
            "The actuator of a self-improving system: enacts the planner's ImprovementActions "
            "on the subsystems that own them, under guardrails (cool-downs, caps, dry-run)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (default: INFO; ERROR for demo, which prints every record)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run the whole loop in one process and print every record as it lands",
        description=(
            "Run the real optimiser between a simulated planner, CognitiveCycle and "
            "orchestrator: every kind of action, some bad parameters, repeats that hit the "
            "cool-down (2 s here), review items and failing swaps. Ends after --duration."
        ),
    )
    demo.add_argument(
        "--duration", type=_positive_seconds, default=10.0, metavar="S",
        help="seconds to run (default: 10)",
    )  # fmt: skip
    demo.add_argument(
        "--dry-run", action="store_true", help="show what would be enacted; change nothing"
    )
    demo.add_argument(
        "--seed", type=int, default=None, help="random seed, for a demo that repeats exactly"
    )
    # The demo prints every record; the optimiser's own warnings would say each failure twice.
    demo.set_defaults(log_level="ERROR")

    schema = commands.add_parser(
        "schema",
        parents=[common],
        help="print the JSON Schema of the wire messages",
        description="Print the JSON Schema (2020-12) of one message, or of all of them.",
    )
    schema.add_argument(
        "name", nargs="?", choices=list(MESSAGES), help="one message (default: all, in turn)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``self-optimiser`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "schema":
            names = [args.name] if args.name else list(MESSAGES)
            for name in names:
                sys.stdout.write(render(name))
            return 0
        if args.command == "demo":
            asyncio.run(run_demo(duration_s=args.duration, dry_run=args.dry_run, seed=args.seed))
            return 0
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stdout for good
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
