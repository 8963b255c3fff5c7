"""The command line's parser: every command, its arguments and its help (the settings listed
from the one settings type)."""

from __future__ import annotations

import argparse
import re
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final, NoReturn

from schemas import ActionKind, EnactmentStatus, asyncapi
from schemas.jsonschema import MESSAGES
from worker.core.errors import ConfigError
from worker.core.text import printable
from worker.settings import WorkerSettings, settings_help


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


def _add_log_level(parser: argparse.ArgumentParser, *, default: str) -> None:
    # Each command gets its own argument: argparse shares `parents=` actions between
    # subparsers, so one command's set_defaults() would change the others' defaults.
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (default: %(default)s)",
    )


def _add_tool_options(parser: argparse.ArgumentParser) -> None:
    """--log-level (WARNING: a person reads the output) and --config, for the people's commands."""
    _add_log_level(parser, default="WARNING")
    _add_config(parser)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings (name = value); OPTIMISER_* variables override it",
    )


def _add_identity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        default=None,
        metavar="NAME",
        help="who is asking, for the audit trail (default: user@host)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument said in one sentence (argparse adds its usage lines)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` says more)\n")


#: ``schema asyncapi``: the document of every channel and message, beside the messages' schemas.
ASYNCAPI: Final = "asyncapi"


#: A module name as the worker reads one (the last words of a results routing key).
_MODULE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")


#: Module names with a topic pattern's `*` (one word) and `#` (any words) between dots.
_MODULE_PATTERN: Final = re.compile(r"(?:[A-Za-z0-9_:/-]+|\*|#)(?:\.(?:[A-Za-z0-9_:/-]+|\*|#))*")


def _namespace(text: str) -> str:
    try:
        return WorkerSettings(namespace=text).namespace  # the worker's own check
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(printable(str(exc))) from None


def _module(text: str) -> str:
    if _MODULE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{printable(text[:60])!r} is not a module name (letters, digits and _ . : / -, "
            f"1 to 128 characters; --module-pattern takes * and #)"
        )
    return text


def _module_pattern(text: str) -> str:
    if len(text) > 128 or _MODULE_PATTERN.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{printable(text[:60])!r} is not a module pattern (dot-separated words of a module "
            f"name, * for one word, # for any number; at most 128 characters)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="self-optimiser",
        description=(
            "The actuator of a self-improving system: enacts the planner's ImprovementActions "
            "on the subsystems that own them, under guardrails (cool-downs, caps, dry-run)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the whole loop on the local broker and print every record as it lands",
        description=textwrap.fill(
            "Run the whole loop on RabbitMQ (OPTIMISER_AMQP_URL, default localhost): a "
            "simulated planner publishes plans, the real worker enacts them and sends commands "
            "to a simulated CognitiveCycle and orchestrator, and every record is printed as it "
            "lands, with the threshold and budgets moving. Plans include every kind, bad "
            "parameters, repeats that hit the cool-down (2 s here), review items, failing swaps "
            "and now and then an unreadable plan. It uses a namespace of its own and deletes it "
            "at the end. Without a broker it runs the loop in one process instead."
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
    demo.add_argument(
        "--in-process", action="store_true", help="no broker: the optimiser and its subsystems only"
    )
    _add_config(demo)
    # The demo prints every record; the optimiser's own warnings would say each failure twice.
    _add_log_level(demo, default="ERROR")

    run = commands.add_parser(
        "run",
        help="consume plans from RabbitMQ and enact them (the worker)",
        description=textwrap.fill(
            "Consume plans from queue N.plans, enact each under the optimiser's guardrails, "
            "publish one EnactmentRecord per action to topic exchange N.results (routing key "
            "<ACTION_KIND>.<STATUS>.<module_name>), FLAG_FOR_REVIEW items to queue N.review, "
            "and unreadable plans to N.plans.invalid. A plan is acked only once the broker has "
            "confirmed all of them. SIGTERM or SIGINT: stop consuming, finish the plan in hand, "
            "exit 0. Settings come from the defaults, then --config, then the environment."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_level(run, default="INFO")
    _add_config(run)

    publish = commands.add_parser(
        "publish",
        help="validate a plan, publish it, and print its records as they land",
        description=textwrap.fill(
            "Validate PLAN (a JSON file, or - for standard input) with the same schemas the "
            "worker uses, publish it to exchange N.plans, and print one line per record until "
            "every action has one. Exit 0 when all came, 1 when they did not in time, 2 when "
            "the plan is not valid. Broker and namespace come from the run settings."
        ),
    )
    publish.add_argument("plan", metavar="PLAN", help="plan file (JSON), or - for stdin")
    publish.add_argument(
        "--no-wait", action="store_true", help="publish and exit without waiting for records"
    )
    publish.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, metavar="S",
        help="how long to wait for the records (default: 30)",
    )  # fmt: skip
    _add_tool_options(publish)

    tail = commands.add_parser(
        "tail",
        help="follow the records on N.results",
        description=textwrap.fill(
            "Follow exchange N.results through a temporary queue bound to the records that "
            "match, one readable line each (or --json lines). Ctrl-C ends it."
        ),
    )
    tail.add_argument("--kind", choices=[k.value for k in ActionKind], help="only this kind")
    tail.add_argument(
        "--status", choices=[s.value for s in EnactmentStatus], help="only this status"
    )
    only = tail.add_mutually_exclusive_group()
    only.add_argument("--module", type=_module, help="only this module (exact name)")
    only.add_argument(
        "--module-pattern",
        type=_module_pattern,
        metavar="PATTERN",
        help="only modules matching this topic pattern (cognition.* or memory.#)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON record per line")
    _add_tool_options(tail)

    _add_control_commands(commands)
    _add_breakers_command(commands)
    _add_review_command(commands)
    _add_definitions_command(commands)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the wire messages, or their AsyncAPI document",
        description="Print the JSON Schema (2020-12) of one message, or of all of them; "
        "`schema asyncapi` prints the AsyncAPI 3.0 document of the namespace's channels and "
        "messages.",
    )
    schema.add_argument(
        "name",
        nargs="?",
        choices=[*MESSAGES, ASYNCAPI],
        help="one message, or asyncapi (default: every message's schema, in turn)",
    )
    schema.add_argument(
        "--namespace",
        type=_namespace,
        metavar="N",
        help=f"the namespace the AsyncAPI document names (default: {asyncapi.DEFAULT_NAMESPACE})",
    )
    _add_log_level(schema, default="WARNING")
    return parser


def _add_control_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    status = commands.add_parser(
        "status",
        help="is the namespace paused, and how deep are its queues",
        description=textwrap.fill(
            "Read the pause state from stream N.control (the last pause or resume: who, when, "
            "why) and the depth of N.plans (with its consumers), N.review, N.plans.invalid and "
            "N.plans.dead."
        ),
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    _add_tool_options(status)

    pause = commands.add_parser(
        "pause",
        help="kill switch: every worker of the namespace stops enacting",
        description=textwrap.fill(
            "Publish a pause to exchange N.control. From their next action on, every worker "
            'of the namespace records each action as SKIPPED "paused: REASON" and enacts '
            "nothing; plans are still consumed and acked, so nothing is lost or left behind. "
            "The pause lives in RabbitMQ (stream N.control): it survives restarts and "
            "failovers until `self-optimiser resume`. It shows in `status`, on /readyz and as "
            "the metric asi_optimiser_paused."
        ),
    )
    pause.add_argument("--reason", default="", help="why, for the records and the people on call")
    pause.add_argument(
        "--force",
        action="store_true",
        help="replace the reason of a pause in force (it keeps the time it began)",
    )
    _add_identity(pause)
    _add_tool_options(pause)

    resume = commands.add_parser(
        "resume",
        help="end a pause: workers enact again from their next action",
        description=textwrap.fill(
            "Publish a resume to exchange N.control: from their next action on, the workers "
            "enact again. Actions recorded as SKIPPED while paused are not enacted later "
            "(their action ids have a record): the planner proposes them again, with new ids."
        ),
    )
    resume.add_argument("--reason", default="", help="why, for the audit trail")
    _add_identity(resume)
    _add_tool_options(resume)


def _add_breakers_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    breakers = commands.add_parser(
        "breakers",
        help="circuit breakers: which are open, and closing one by hand",
        description=textwrap.fill(
            "A (module, kind) whose actions FAILED breaker_failures times within "
            "breaker_window_s has an open circuit breaker: its actions are SKIPPED, and one "
            "review item said so. `list` shows the open and half-open ones, read from stream "
            "N.results.log as the workers read it; `reset MODULE KIND` closes one on every "
            "worker of the namespace (its failures so far are forgiven)."
        ),
    )
    verbs = breakers.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="the open and half-open breakers")
    listing.add_argument("--json", action="store_true", help="one JSON object per breaker")
    _add_tool_options(listing)
    reset = verbs.add_parser("reset", help="close one breaker on every worker")
    reset.add_argument("module", metavar="MODULE", help="the module's exact name")
    reset.add_argument(
        "kind", metavar="KIND", choices=[k.value for k in ActionKind], help="its action kind"
    )
    reset.add_argument("--reason", default="", help="why, for the audit trail")
    _add_identity(reset)
    _add_tool_options(reset)


def _add_review_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    review = commands.add_parser(
        "review",
        help="work the review queue: list, show, ack, requeue",
        description=textwrap.fill(
            "Work queue N.review, where the worker puts FLAG_FOR_REVIEW actions. Items are "
            "named by their action id; copies of one action (a redelivered plan can flag it "
            "twice) are shown once and acked together. Looking at the queue takes its items "
            "and gives them back in order, so two people should not work it at the same moment."
        ),
    )
    verbs = review.add_subparsers(dest="verb", metavar="VERB", required=True)
    review_list = verbs.add_parser(
        "list", help="pending items, oldest first: age, module, action id, plan, rationale"
    )
    review_list.add_argument("--json", action="store_true", help="one JSON object per item")
    for verb, text in (
        ("show", "everything about one item"),
        ("ack", "done with one item: it leaves the queue"),
        ("requeue", "put one item back behind the others, for later"),
    ):
        one = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        one.add_argument("action_id", metavar="ID", help="the item's action id (see `review list`)")
        if verb == "show":
            one.add_argument("--json", action="store_true", help="as one JSON object")
    for each in verbs.choices.values():
        _add_tool_options(each)


def _add_definitions_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    definitions = commands.add_parser(
        "definitions",
        help="RabbitMQ definitions: the vhost, its queues, and least-privilege users",
        description=textwrap.fill(
            "Print (or write) RabbitMQ definitions for the namespace: the vhost, every queue, "
            "exchange and binding the worker uses, and one user per role (planner, worker, "
            "reflection, operator, subsystem, admin) with the least privilege it needs. No "
            "guest. Load them with load_definitions in rabbitmq.conf or `rabbitmqctl "
            "import_definitions FILE`; run the worker with OPTIMISER_DECLARE_TOPOLOGY=false. "
            "Passwords: with --password-env each role's comes from OPTIMISER_PASSWORD_<ROLE> "
            "(stored hashed); a role without one cannot log in until `rabbitmqctl "
            "change_password`. See deploy/README.md."
        ),
    )
    definitions.add_argument("--vhost", default="optimiser", help="(default: %(default)s)")
    definitions.add_argument(
        "--user-prefix",
        default="optimiser-",
        help="user names are PREFIX<role> (default: %(default)s)",
    )
    definitions.add_argument(
        "--password-env", action="store_true", help="take passwords from OPTIMISER_PASSWORD_<ROLE>"
    )
    definitions.add_argument("--output", "-o", type=Path, metavar="FILE", help="(default: stdout)")
    _add_tool_options(definitions)
