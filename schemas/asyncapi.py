"""The AsyncAPI 3.0 document of a namespace: its channels, the worker's operations, the messages.

For planner and ReflectionCycle teams in other languages. Generated from the Structs like the
JSON Schemas, never kept by hand: ``python -m schemas.asyncapi`` rewrites ``schemas/asyncapi.json``
(the default namespace); ``self-optimiser schema asyncapi`` prints it. A test fails when the file
drifts from the types, and the AsyncAPI parser validates it.

The document describes the worker: ``receive`` is what it consumes (a planner or an operator
sends it), ``send`` what it publishes (ReflectionCycle, operators or a subsystem receive it).
Exchanges and queues are channels with the AMQP 0-9-1 binding; payloads are the component
schemas, made as ``schemas/json/`` is (msgspec, then ``strict``), in AsyncAPI's default schema
format (a superset of draft-07), which reads every keyword they use as 2020-12 does (a test
says so). The names come from
``schemas.names``, as the worker's do.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas.codec import JSON, MSGPACK, encode
from schemas.commands import (
    OWNER,
    ReplyOutcome,
    Subsystem,
    SubsystemCommand,
    SubsystemReply,
    ThresholdChange,
    TuneThreshold,
)
from schemas.control import ControlCommand, ControlMessage
from schemas.jsonschema import strict
from schemas.messages import (
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
    Message,
    ParkReason,
    Plan,
)
from schemas.names import Names

DOCUMENT: Final = Path(__file__).with_name("asyncapi.json")
DEFAULT_NAMESPACE: Final = "optimiser"
AMQP_BINDING: Final = "0.3.0"
#: The Structs whose schemas are components; the types they use come along.
_TYPES: Final[tuple[type[Message], ...]] = (
    Plan,
    ImprovementAction,
    EnactmentRecord,
    SubsystemCommand,
    SubsystemReply,
    ControlMessage,
)
_PERSISTENT: Final = 2


def document(namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``namespace``."""
    n = namespace
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "self-optimiser",
            "version": version("self-optimiser"),
            "description": _INFO.format(namespace=n),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": JSON,
        "servers": {
            "broker": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/",
                "description": "A RabbitMQ node or cluster (quorum queues, streams); `amqps` "
                "for TLS. `deploy/` has least-privilege users: a planner may only publish "
                "plans, ReflectionCycle only read results, operators only the review queue.",
            }
        },
        "channels": _channels(Names(n)),
        "operations": _operations(),
        "components": {
            "schemas": _schemas(),
            "messages": _messages(),
            "parameters": _parameters(),
        },
    }


def render(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The document as the text stored in ``schemas/asyncapi.json``."""
    return json.dumps(document(namespace), indent=2, ensure_ascii=False) + "\n"


def write(path: Path = DOCUMENT) -> Path:
    path.write_text(render(), encoding="utf-8")
    return path


_INFO: Final = """\
The wire contract of the self-optimiser, the actuator of a self-improving system, on RabbitMQ \
(AMQP 0-9-1). Generated from the msgspec Structs in `schemas/`; the payload schemas are \
those of `schemas/json/`, gathered as components.

The operations are the worker's: it **receives** plans (a planner sends them) and control \
messages (operators send them); it **sends** one record per action (ReflectionCycle receives \
them), review items and parked plans (operators read them) and subsystem commands (a \
subsystem answers each with a reply).

Every name begins with the namespace, `{namespace}` here (`OPTIMISER_NAMESPACE`); \
`self-optimiser schema asyncapi --namespace N` prints this document for another. Times are \
RFC 3339 with their offset. Unknown fields of a plan are ignored, unknown fields of an action \
refused. The worker also refuses what a JSON Schema cannot say: duplicate action ids in a \
plan, an integer written as `1.0`, a lone surrogate escape, a body over `max_plan_bytes`."""


# --- channels ---------------------------------------------------------------------------------


def _exchange(name: str, kind: str, address: str | None, **channel: Any) -> dict[str, Any]:
    """A channel that is a routing key (``address``; None for a fanout) on an exchange."""
    binding = {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"}
    return {
        "address": address,
        **channel,
        "bindings": {
            "amqp": {"is": "routingKey", "exchange": binding, "bindingVersion": AMQP_BINDING}
        },
    }


def _queue(name: str, **channel: Any) -> dict[str, Any]:
    binding = {"name": name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"}
    return {
        "address": name,
        **channel,
        "bindings": {"amqp": {"is": "queue", "queue": binding, "bindingVersion": AMQP_BINDING}},
    }


def _refs(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/messages/{name}"} for name in names}


def _channels(names: Names) -> dict[str, Any]:
    return {
        "plans": _exchange(
            names.plans_exchange, "fanout", None,
            title="Plans, to the worker",
            description=f"Publish plans to fanout exchange `{names.plans_exchange}` (any routing "
            f"key), which feeds queue `{names.plans_queue}`: persistent, mandatory and with "
            "publisher confirms, so that none is lost unseen.",
            messages=_refs("plan", "planMsgpack"),
        ),
        "plansQueue": _queue(
            names.plans_queue,
            title="The worker's plan queue",
            description="A quorum queue with one active consumer (a standby worker takes "
            "over when it goes). A plan is acked once every record and review item it "
            "produced is confirmed; one that cannot be read is parked in "
            f"`{names.invalid_queue}`; one delivered `delivery_limit` times without an ack is "
            f"dead-lettered to `{names.dead_queue}`.",
            messages=_refs("plan", "planMsgpack"),
        ),
        "results": _exchange(
            names.results_exchange, "topic", "{actionKind}.{status}.{moduleName}",
            title="Records, one per action",
            description=f"Topic exchange `{names.results_exchange}`: bind a queue of your own. A "
            "module name may hold dots, so it takes `#` in a pattern: `*.FAILED.#` (every "
            "failure), `HOT_SWAP_MODULE.#` (every swap), `*.*.memory.index` (one module). Stream "
            f"`{names.results_log}` keeps every record for `retention_s`: the worker's "
            "guardrail state.",
            parameters={
                name: {"$ref": f"#/components/parameters/{name}"}
                for name in ("actionKind", "status", "moduleName")
            },
            messages=_refs("record"),
        ),
        "review": _exchange(
            names.review_exchange, "fanout", None,
            title="FLAG_FOR_REVIEW actions, from the worker",
            description=f"Fanout exchange `{names.review_exchange}` in front of queue "
            f"`{names.review_queue}`.",
            messages=_refs("reviewItem"),
        ),
        "reviewQueue": _queue(
            names.review_queue,
            title="The review queue, for operators",
            description="A quorum queue; `self-optimiser review` lists, shows, acks and "
            "requeues its items.",
            messages=_refs("reviewItem"),
        ),
        "invalidPlans": _exchange(
            names.invalid_exchange, "fanout", None,
            title="Parked plans, from the worker",
            description=f"Fanout exchange `{names.invalid_exchange}` in front of the queue of the "
            "same name.",
            messages=_refs("parkedPlan"),
        ),
        "invalidPlansQueue": _queue(
            names.invalid_queue,
            title="Plans the worker could not read",
            description="A quorum queue: each plan as it came, with the reason in `x-error`.",
            messages=_refs("parkedPlan"),
        ),
        "deadPlansQueue": _queue(
            names.dead_queue,
            title="Plans delivered too often without an ack",
            description=f"A quorum queue, fed by the broker through fanout exchange "
            f"`{names.dead_exchange}` when a plan reaches the delivery limit of "
            f"`{names.plans_queue}` (it keeps crashing workers). The worker never reads it.",
            messages=_refs("deadPlan"),
        ),
        "commands": _exchange(
            names.commands_exchange, "topic", "{subsystem}.{verb}",
            title="Subsystem commands",
            description=f"Topic exchange `{names.commands_exchange}`. A subsystem binds a queue "
            "of its own (`SubsystemServer` binds auto-delete queue "
            f"`{names.command_queue('<subsystem>')}` with `<subsystem>.*`); with none bound the "
            "broker returns the command and the action is SKIPPED.",
            parameters={
                name: {"$ref": f"#/components/parameters/{name}"} for name in ("subsystem", "verb")
            },
            messages=_refs("command"),
        ),
        "replies": _exchange(
            "", "default", None,
            title="Replies to commands",
            description="Direct reply-to: a subsystem publishes its reply to the default "
            "exchange with the command's `reply_to` property as the routing key and its "
            "`correlation_id`, not persistent.",
            messages=_refs("reply"),
        ),
        "control": _exchange(
            names.control, "fanout", None,
            title="Pause, resume, breaker resets, from operators",
            description=f"Fanout exchange `{names.control}` into stream `{names.control}`; "
            "`self-optimiser pause`, `resume` and `breakers reset` publish here.",
            messages=_refs("control"),
        ),
        "controlStream": _queue(
            names.control,
            title="The kill switch's state",
            description="A stream: every worker reads it from its start at start-up and then "
            "follows it, so the last message is the state.",
            messages=_refs("control"),
        ),
    }  # fmt: skip


# --- operations (the worker's) ----------------------------------------------------------------


def _operation(
    action: str, channel: str, messages: tuple[str, ...], description: str, **amqp: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "description": description,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
        "bindings": {"amqp": {**amqp, "bindingVersion": AMQP_BINDING}},
    }


def _operations() -> dict[str, Any]:
    confirmed = {"deliveryMode": _PERSISTENT, "mandatory": True}
    return {
        "receivePlan": _operation(
            "receive", "plansQueue", ("plan", "planMsgpack"),
            "Enact each action under the guardrails, in order; an action id seen before is "
            "not enacted again (its original record is published again, `replay: true`). "
            "The plan is acked after the broker confirmed all it produced.",
            ack=True,
        ),
        "sendRecord": _operation(
            "send", "results", ("record",),
            "One record per action of a plan, confirmed by the broker before the plan is acked.",
            **confirmed,
        ),
        "sendReviewItem": _operation(
            "send", "review", ("reviewItem",),
            "A FLAG_FOR_REVIEW action, confirmed before its record says SUCCESS; a copy "
            "re-sent after a lost confirm has the same `message_id` and `flagged_at`.",
            **confirmed,
        ),
        "parkPlan": _operation(
            "send", "invalidPlans", ("parkedPlan",),
            "A plan that cannot be read, moved aside whole; then the original is acked.",
            **confirmed,
        ),
        "sendCommand": {
            **_operation(
                "send", "commands", ("command",),
                "One change for the subsystem that owns it; the command expires on the broker "
                "after `subsystem_timeout_s`, and no reply by then makes the action FAILED.",
                mandatory=True,
            ),
            "reply": {
                "address": {
                    "description": "The command's `reply_to` (an AMQP property, not a "
                    "header): RabbitMQ's direct reply-to, `amq.rabbitmq.reply-to.<token>`.",
                    "location": "$message.header#/reply_to",
                },
                "channel": {"$ref": "#/channels/replies"},
                "messages": [{"$ref": "#/channels/replies/messages/reply"}],
            },
        },
        "receiveControl": _operation(
            "receive", "controlStream", ("control",),
            "While paused a worker still consumes plans and records each action as SKIPPED "
            '"paused: <reason>".',
        ),
    }  # fmt: skip


# --- components -------------------------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}"
    )
    return {name: strict(schema) for name, schema in sorted(components.items())}


def _parameters() -> dict[str, Any]:
    verbs = sorted(str(verb.__struct_config__.tag) for verb in OWNER)
    return {
        "actionKind": {
            "description": "The action's kind.",
            "enum": [kind.value for kind in ActionKind],
            "location": "$message.payload#/action/action_kind",
        },
        "status": {
            "description": "What became of the action.",
            "enum": [status.value for status in EnactmentStatus],
            "location": "$message.payload#/status",
        },
        "moduleName": {
            "description": "The action's module; it may hold dots (`cognition.detector`).",
            "examples": ["cognition.detector"],
            "location": "$message.payload#/action/module_name",
        },
        "subsystem": {
            "description": "Who owns the change: detector (tune), budget (increase), load "
            "(shed), orchestrator (swap).",
            "enum": [subsystem.value for subsystem in Subsystem],
        },
        "verb": {
            "description": "What the command asks.",
            "enum": verbs,
            "location": "$message.payload#/arguments/verb",
        },
    }


def _payload(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _headers(required: tuple[str, ...], extra: bool, **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": extra,
    }


def _message(
    name: str,
    title: str,
    description: str,
    payload: dict[str, Any],
    *,
    content_type: str | None = JSON,
    message_type: str | None = None,
    headers: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"name": name, "title": title, "description": description}
    if content_type is not None:
        message["contentType"] = content_type
    message["payload"] = payload
    if headers is not None:
        message["headers"] = headers
    if message_type is not None:
        amqp = {"messageType": message_type, "bindingVersion": AMQP_BINDING}
        message["bindings"] = {"amqp": amqp}
    if example is not None:
        message["examples"] = [example]
    return message


def _messages() -> dict[str, Any]:
    text = {"type": "string"}
    plan_read = (
        "The worker reads `content_type` (none means JSON) and `content_encoding` (none or "
        "`identity`); `message_id` is up to the planner (`plan_id` is a good one)."
    )
    return {
        "plan": _message(
            "Plan", "A plan (JSON)", f"A ranked batch of actions, enacted in order. {plan_read}",
            _payload("Plan"), example={"payload": _json(EXAMPLE_PLAN)},
        ),
        "planMsgpack": _message(
            "Plan", "A plan (msgpack)",
            f"The same plan as msgpack (`application/x-msgpack` is read too). {plan_read}",
            _payload("Plan"), content_type=MSGPACK,
        ),
        "record": _message(
            "EnactmentRecord", "What became of one action",
            "Persistent; `message_id` is the action's `action_id`. Routing key "
            "`<ACTION_KIND>.<STATUS>.<module_name>`.",
            _payload("EnactmentRecord"), message_type="enactment_record",
            headers=_headers(
                ("plan_id",), False,
                plan_id={**text, "maxLength": 128, "description": "The record's plan."},
                replay={
                    "type": "boolean", "const": True,
                    "description": "Present on a record published again (the body says so "
                    "too), so a reader can tell without decoding it.",
                },
            ),
            example={"headers": {"plan_id": "p-1"}, "payload": _json(EXAMPLE_RECORD)},
        ),
        "reviewItem": _message(
            "ImprovementAction", "An action flagged for review",
            "Persistent; `message_id` is the `action_id` (a reader drops a repeat by it), "
            "`timestamp` when it was flagged.",
            _payload("ImprovementAction"), message_type="improvement_action",
            headers=_headers(
                ("plan_id", "module_name", "flagged_at"), False,
                plan_id={**text, "maxLength": 128},
                module_name=text,
                flagged_at={
                    **text, "format": "date-time",
                    "description": "When, to the microsecond: a re-sent copy carries the "
                    "same, a second enactment would not.",
                },
            ),
            example={
                "headers": {
                    "plan_id": "p-1", "module_name": "planning.search",
                    "flagged_at": "2026-11-23T12:00:00.250000+00:00",
                },
                "payload": _json(EXAMPLE_REVIEW),
            },
        ),
        "parkedPlan": _message(
            "ParkedPlan", "A plan the worker could not read",
            "The body as it came, with its content type, encoding, timestamp and headers, "
            "plus the worker's headers below (a 64-bit float header comes back 32-bit).",
            {"description": "The body as it came: perhaps no plan, perhaps not JSON."},
            content_type=None,
            headers=_headers(
                ("x-error", "x-error-kind", "x-original-exchange", "x-original-routing-key",
                 "x-original-message-id", "x-parked-at"),
                True,
                **{
                    "x-error": {
                        **text, "maxLength": 1000,
                        "description": "Why, naming the path or the byte: ``Invalid enum "
                        "value 'DROP' - at `$.actions[1].action_kind` ``.",
                    },
                    "x-error-kind": {**text, "enum": list(ParkReason)},
                    "x-original-exchange": text,
                    "x-original-routing-key": text,
                    "x-original-message-id": text,
                    "x-parked-at": {**text, "format": "date-time"},
                    **{
                        f"x-original-{name}-bytes": {
                            "description": f"For `unreadable_properties` only: the {name} as "
                            "its bytes (an AMQP byte array), since they are not UTF-8.",
                        }
                        for name in ("routing-key", "message-id")
                    },
                },
            ),
        ),
        "deadPlan": _message(
            "DeadPlan", "A plan dead-lettered by the broker",
            "The plan as it was published, with the broker's dead-letter headers "
            "(`x-first-death-reason` is `delivery_limit`).",
            {"description": "The plan as it was published."},
            content_type=None,
        ),
        "command": _message(
            "SubsystemCommand", "A change for one subsystem",
            "`message_id` is the `action_id`, the idempotency key: a subsystem that applied "
            "it answers with its first reply (`repeat: true`) and applies nothing. A "
            "subsystem must not apply a command after its `deadline` (reply REJECTED). "
            "Properties: `correlation_id`, `reply_to`, `expiration`.",
            _payload("SubsystemCommand"), message_type="subsystem_command",
            example={"payload": _json(EXAMPLE_COMMAND)},
        ),
        "reply": _message(
            "SubsystemReply", "A subsystem's answer",
            "With the command's `correlation_id`; `change` says what changed.",
            _payload("SubsystemReply"), example={"payload": _json(EXAMPLE_REPLY)},
        ),
        "control": _message(
            "ControlMessage", "Pause, resume or a breaker reset",
            "Persistent, with AMQP `type` `control.<command>` (`control.pause`). "
            "`reset_breaker` names the breaker with `module` and `action_kind`.",
            _payload("ControlMessage"),
            example={"payload": _json(EXAMPLE_PAUSE)},
        ),
    }  # fmt: skip


# --- examples: made from the Structs, so the parser checks the schemas against msgspec --------

_AT: Final = datetime(2026, 11, 23, 12, 0, 0, 250000, tzinfo=UTC)
EXAMPLE_ACTION: Final = ImprovementAction(
    action_id="a-1",
    module_name="cognition.detector",
    action_kind=ActionKind.TUNE_THRESHOLD,
    parameters={"suggested_delta": "0.1"},
    priority=10,
    rationale="p95 alerts fire on normal load",
)
EXAMPLE_REVIEW: Final = ImprovementAction(
    action_id="a-2",
    module_name="planning.search",
    action_kind=ActionKind.FLAG_FOR_REVIEW,
    rationale="search quality dropped after the last swap",
)
EXAMPLE_PLAN: Final = Plan(
    plan_id="p-1",
    actions=[EXAMPLE_ACTION, EXAMPLE_REVIEW],
    created_at=_AT,
    planner="improvement-planner",
)
EXAMPLE_RECORD: Final = EnactmentRecord(
    plan_id="p-1",
    action=EXAMPLE_ACTION,
    status=EnactmentStatus.SUCCESS,
    detail="p95 threshold 500.0 → 550.0 ms",
    duration_s=0.004,
    attempted_at=_AT,
    setting="detector.p95_threshold_ms",
    old=500.0,
    new=550.0,
)
EXAMPLE_COMMAND: Final = SubsystemCommand(
    action_id="a-1",
    plan_id="p-1",
    module="cognition.detector",
    arguments=TuneThreshold(delta=0.1, floor_ms=50.0, ceiling_ms=5000.0),
    issued_at=_AT,
    deadline=_AT + timedelta(seconds=30),
)
EXAMPLE_REPLY: Final = SubsystemReply(
    action_id="a-1",
    outcome=ReplyOutcome.SUCCESS,
    detail="p95 threshold 500.0 → 550.0 ms",
    change=ThresholdChange(old_ms=500.0, new_ms=550.0),
)
EXAMPLE_PAUSE: Final = ControlMessage(
    command=ControlCommand.PAUSE, issued_at=_AT, reason="incident 4711", issued_by="ops@host"
)


def _json(message: msgspec.Struct) -> Any:
    return json.loads(encode(message))


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write()}\n")
