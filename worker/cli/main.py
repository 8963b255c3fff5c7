"""``self-optimiser``: the command line. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final, NoReturn

import aiormq
from prometheus_client import CollectorRegistry

from schemas import ActionKind, EnactmentStatus, asyncapi
from schemas.control import ControlCommand
from schemas.jsonschema import MESSAGES, render
from schemas.names import Names
from worker.amqp.control import describe
from worker.amqp.errors import BROKER_ERRORS, BrokerUnavailable
from worker.amqp.worker import Worker
from worker.cli.logs import LIBRARIES, Quieter
from worker.core.errors import ConfigError, OptimiserError
from worker.core.text import printable
from worker.demo.live import run_live_demo
from worker.demo.simulated import run_demo
from worker.ops.breakers import format_breakers, read_breakers, reset_breaker
from worker.ops.control import operator_name, read_control, send_control
from worker.ops.definitions import ROLES, definitions, passwords_from_env
from worker.ops.publish import PlanRejected, publish_plan, read_plan
from worker.ops.review import work_review
from worker.ops.status import show_status
from worker.ops.tail import tail_records
from worker.settings import WorkerSettings, load_settings, settings_help

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


def _settings(config_file: Path | None) -> WorkerSettings:
    try:
        return load_settings(os.environ, config_file)
    except ConfigError as exc:
        raise _Exit(2, str(exc)) from None


#: The people's commands give up on an unreachable broker sooner than the worker does.
TOOL_CONNECT_RETRY_S = 5.0


def _tool_settings(config_file: Path | None) -> WorkerSettings:
    settings = _settings(config_file)
    return replace(settings, connect_retry_s=min(settings.connect_retry_s, TOOL_CONNECT_RETRY_S))


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _run(config_file: Path | None) -> int:
    settings = _settings(config_file)
    log.info("settings: %r", settings)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(settings))
    return 0


def _publish(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    try:
        plan, body = read_plan(args.plan)
    except PlanRejected as exc:
        raise _Exit(2, str(exc)) from None
    if len(body) > settings.max_plan_bytes:
        raise _Exit(
            2,
            f"{args.plan} is {len(body):,} bytes, more than a worker reads (max_plan_bytes = "
            f"{settings.max_plan_bytes:,}): it would be parked unread; split it into smaller plans",
        )
    wait = None if args.no_wait else args.timeout
    all_came = asyncio.run(publish_plan(settings, plan, body, wait_s=wait))
    return 0 if all_came else 1


def _demo(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if not args.in_process:
        try:
            asyncio.run(
                run_live_demo(
                    replace(settings, connect_retry_s=0.0),
                    duration_s=args.duration,
                    dry_run=args.dry_run,
                    seed=args.seed,
                )
            )
            return 0
        except (*BROKER_ERRORS, BrokerUnavailable) as exc:
            print(
                f"no RabbitMQ at {settings.safe_url} ({exc}); running the loop in one process "
                f"instead (start RabbitMQ, or set OPTIMISER_AMQP_URL, for the whole loop)"
            )
    asyncio.run(run_demo(duration_s=args.duration, dry_run=args.dry_run, seed=args.seed))
    return 0


def _control(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    command = ControlCommand(args.command)
    if len(args.reason) > 500:
        raise _Exit(2, "--reason is longer than 500 characters")
    current = asyncio.run(read_control(settings))
    in_force = current is not None and current.command is ControlCommand.PAUSE
    if command is ControlCommand.RESUME and not in_force:
        print(
            f"namespace {settings.namespace} is not paused: nothing to resume ({describe(current)})"
        )
        return 0
    since = None
    if command is ControlCommand.PAUSE and in_force:
        assert current is not None
        if not args.force:
            raise _Exit(
                1,
                f"namespace {settings.namespace} is already {describe(current)}; "
                f"`pause --force` replaces that reason and keeps the time it began",
            )
        since = current.paused_since
    sent = asyncio.run(
        send_control(
            settings, command, reason=args.reason, issued_by=args.by or operator_name(),
            since=since,
        )
    )  # fmt: skip
    if command is ControlCommand.PAUSE:
        print(
            f"paused namespace {settings.namespace}: every worker records each action as "
            f'SKIPPED "paused: {sent.reason or "no reason given"}" from its next one, until '
            f"`self-optimiser resume`"
        )
    else:
        print(f"resumed namespace {settings.namespace}: the workers enact from their next action")
    return 0


def _breakers(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    if args.verb == "reset":
        if len(args.reason) > 500:
            raise _Exit(2, "--reason is longer than 500 characters")
        asyncio.run(
            reset_breaker(
                settings,
                args.module,
                ActionKind(args.kind),
                reason=args.reason,
                issued_by=args.by or operator_name(),
            )
        )
        print(
            f"reset the breaker of {args.kind} on {args.module} in namespace "
            f"{settings.namespace}: every worker dispatches its actions again"
        )
        return 0
    views = asyncio.run(read_breakers(settings))
    if args.json:
        for view in views:
            print(json.dumps(dataclasses.asdict(view)))
    elif not views:
        print("no circuit breaker is open")
    else:
        print(format_breakers(views))
    return 0


def _status(args: argparse.Namespace) -> int:
    asyncio.run(show_status(_tool_settings(args.config), as_json=args.json))
    return 0


def _review(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    found = asyncio.run(
        work_review(
            settings,
            args.verb,
            getattr(args, "action_id", None),
            as_json=getattr(args, "json", False),
        )
    )
    return 0 if found else 1


def _definitions(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    passwords = passwords_from_env(os.environ) if args.password_env else {}
    if args.password_env and not passwords:
        raise _Exit(
            2,
            "--password-env found no OPTIMISER_PASSWORD_<ROLE> variable (PLANNER, WORKER, "
            "REFLECTION, OPERATOR, SUBSYSTEM, ADMIN): set them, or leave --password-env out",
        )
    document = definitions(
        Names(settings.namespace),
        vhost=args.vhost,
        user_prefix=args.user_prefix,
        passwords=passwords,
        delivery_limit=settings.delivery_limit,
        retention_s=settings.state_retention_s,
    )
    text = json.dumps(document, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _Exit(1, f"cannot write {args.output}: {exc.strerror}") from None
    missing = [r for r in ROLES if r not in passwords]
    print(
        f"wrote {args.output}: vhost {args.vhost}, namespace {settings.namespace}"
        + (f"; no password for {', '.join(missing)} (they cannot log in)" if missing else "")
    )
    return 0


def _tail(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)

    async def follow() -> None:
        # Ctrl-C (or SIGTERM) ends the wait itself: tail then closes its connection and
        # exits 0, instead of relying on the main task's cancellation reaching every task the
        # robust connection keeps (CI saw a tail that did not end within 30 s of SIGINT).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stop_or_exit, stop)
        await tail_records(
            settings,
            kind=args.kind,
            status=args.status,
            module=args.module,
            module_pattern=args.module_pattern,
            as_json=args.json,
            # Line by line into a pipe too (`tail | grep`), as it comes.
            out=lambda line: print(line, flush=True),
            stop=stop,
        )

    asyncio.run(follow())
    return 0


def _stop_or_exit(stop: asyncio.Event) -> None:
    """The first signal asks to stop; a second one exits at once."""
    if stop.is_set():
        os._exit(130)
    stop.set()


async def _serve(settings: WorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_on_signal, stop, signum)
    await Worker(settings, registry=CollectorRegistry()).run(stop)


def _stop_on_signal(stop: asyncio.Event, signum: int) -> None:
    name = signal.Signals(signum).name
    if stop.is_set():
        log.warning("second %s: exiting now; plans in hand return to the queue", name)
        os._exit(1)
    log.info("%s received: finishing the plan in hand (again to exit at once)", name)
    stop.set()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (by default on Linux; the ``[fast]`` extra elsewhere),
    else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _reply_text(exc: BaseException) -> str:
    """The broker's reply text of a closed channel (aiormq puts a frame, or text, in args)."""
    first = exc.args[0] if exc.args else exc
    return str(getattr(first, "reply_text", first))


def _schema(args: argparse.Namespace) -> int:
    if args.name == ASYNCAPI:
        sys.stdout.write(asyncapi.render(args.namespace or asyncapi.DEFAULT_NAMESPACE))
        return 0
    if args.namespace is not None:
        sys.stderr.write(
            "self-optimiser schema: error: --namespace is for the AsyncAPI document "
            "(`self-optimiser schema asyncapi --namespace N`); a message's schema names none\n"
        )
        return 2
    for name in [args.name] if args.name else list(MESSAGES):
        sys.stdout.write(render(name))
    return 0


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
        if args.command == "schema":
            return _schema(args)
        if args.command == "run":
            return _run(args.config)
        if args.command == "publish":
            return _publish(args)
        if args.command == "tail":
            return _tail(args)
        if args.command == "demo":
            return _demo(args)
        if args.command in ("pause", "resume"):
            return _control(args)
        if args.command == "breakers":
            return _breakers(args)
        if args.command == "status":
            return _status(args)
        if args.command == "review":
            return _review(args)
        if args.command == "definitions":
            return _definitions(args)
    except _Exit as exc:
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
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover
