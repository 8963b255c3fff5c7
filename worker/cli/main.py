"""``self-optimiser``: the command line's entry point. Logging is configured here and nowhere
else; each command's work is ``worker.cli.commands``, its arguments ``worker.cli.parser``."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

import aiormq

from worker.cli.commands import COMMANDS, ExitWith
from worker.cli.logs import LIBRARIES, Quieter
from worker.cli.parser import build_parser
from worker.core.errors import OptimiserError


def _reply_text(exc: BaseException) -> str:
    """The broker's reply text of a closed channel (aiormq puts a frame, or text, in args)."""
    first = exc.args[0] if exc.args else exc
    return str(getattr(first, "reply_text", first))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``self-optimiser`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    # UTC with its Z, as every time a person reads from this project.
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(Quieter())
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if args.command != "run" and args.log_level != "DEBUG":
        # A person's command says itself what became of the broker: one sentence, or tail's
        # two lines. The libraries' own account of it is for --log-level DEBUG.
        for name in LIBRARIES:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return COMMANDS[args.command](args)
    except ExitWith as exc:
        sys.stderr.write(f"self-optimiser: error: {exc}\n")
        return exc.code
    except OptimiserError as exc:
        sys.stderr.write(f"self-optimiser: error: {exc}\n")
        return 1
    except aiormq.exceptions.ChannelAccessRefused as exc:
        sys.stderr.write(
            f"self-optimiser: error: the broker refused: {_reply_text(exc)}. The user in "
            f"OPTIMISER_AMQP_URL may not do this; see the roles in deploy/README.md\n"
        )
        return 1
    except aiormq.exceptions.AMQPError as exc:
        sys.stderr.write(
            f"self-optimiser: error: the broker closed the channel: {_reply_text(exc)}\n"
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stdout for good
        return 0
