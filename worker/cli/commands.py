"""What each command of the command line does, and the table main() dispatches by."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from schemas import ActionKind, asyncapi
from schemas.control import ControlCommand
from schemas.jsonschema import MESSAGES, render
from schemas.names import Names
from worker.amqp.control import describe
from worker.amqp.errors import BROKER_ERRORS, BrokerUnavailable
from worker.amqp.worker import Worker
from worker.cli.parser import ASYNCAPI
from worker.core.errors import ConfigError
from worker.demo.live import run_live_demo
from worker.demo.simulated import run_demo
from worker.ops import definitions as broker_definitions
from worker.ops.breakers import format_breakers, read_breakers, reset_breaker
from worker.ops.control import operator_name, read_control, send_control
from worker.ops.definitions import ROLES, passwords_from_env
from worker.ops.publish import PlanRejected, publish_plan, read_plan
from worker.ops.review import work_review
from worker.ops.status import show_status
from worker.ops.tail import tail_records
from worker.settings import WorkerSettings, load_settings

log = logging.getLogger(__name__)


def _settings(config_file: Path | None) -> WorkerSettings:
    try:
        return load_settings(os.environ, config_file)
    except ConfigError as exc:
        raise ExitWith(2, str(exc)) from None


#: The people's commands give up on an unreachable broker sooner than the worker does.
TOOL_CONNECT_RETRY_S = 5.0


def _tool_settings(config_file: Path | None) -> WorkerSettings:
    settings = _settings(config_file)
    return replace(settings, connect_retry_s=min(settings.connect_retry_s, TOOL_CONNECT_RETRY_S))


class ExitWith(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    log.info("settings: %r", settings)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(settings))
    return 0


def publish(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    try:
        plan, body = read_plan(args.plan)
    except PlanRejected as exc:
        raise ExitWith(2, str(exc)) from None
    if len(body) > settings.max_plan_bytes:
        raise ExitWith(
            2,
            f"{args.plan} is {len(body):,} bytes, more than a worker reads (max_plan_bytes = "
            f"{settings.max_plan_bytes:,}): it would be parked unread; split it into smaller plans",
        )
    wait = None if args.no_wait else args.timeout
    all_came = asyncio.run(publish_plan(settings, plan, body, wait_s=wait))
    return 0 if all_came else 1


def demo(args: argparse.Namespace) -> int:
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


def control(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    command = ControlCommand(args.command)
    if len(args.reason) > 500:
        raise ExitWith(2, "--reason is longer than 500 characters")
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
            raise ExitWith(
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


def breakers(args: argparse.Namespace) -> int:
    settings = _tool_settings(args.config)
    if args.verb == "reset":
        if len(args.reason) > 500:
            raise ExitWith(2, "--reason is longer than 500 characters")
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


def status(args: argparse.Namespace) -> int:
    asyncio.run(show_status(_tool_settings(args.config), as_json=args.json))
    return 0


def review(args: argparse.Namespace) -> int:
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


def definitions(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    passwords = passwords_from_env(os.environ) if args.password_env else {}
    if args.password_env and not passwords:
        raise ExitWith(
            2,
            "--password-env found no OPTIMISER_PASSWORD_<ROLE> variable (PLANNER, WORKER, "
            "REFLECTION, OPERATOR, SUBSYSTEM, ADMIN): set them, or leave --password-env out",
        )
    document = broker_definitions.definitions(
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
        raise ExitWith(1, f"cannot write {args.output}: {exc.strerror}") from None
    missing = [r for r in ROLES if r not in passwords]
    print(
        f"wrote {args.output}: vhost {args.vhost}, namespace {settings.namespace}"
        + (f"; no password for {', '.join(missing)} (they cannot log in)" if missing else "")
    )
    return 0


def tail(args: argparse.Namespace) -> int:
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


def schema(args: argparse.Namespace) -> int:
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


#: What each command does, by its name on the command line.
COMMANDS: Final[Mapping[str, Callable[[argparse.Namespace], int]]] = {
    "schema": schema,
    "run": run,
    "publish": publish,
    "tail": tail,
    "demo": demo,
    "pause": control,
    "resume": control,
    "breakers": breakers,
    "status": status,
    "review": review,
    "definitions": definitions,
}
