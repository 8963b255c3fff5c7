"""RabbitMQ definitions for one namespace: the vhost, its queues and exchanges, and one user per
role with the least privilege that role needs (``self-optimiser definitions``).

The queues, exchanges and bindings come from ``worker.amqp.topology.layout()``, the same data the
worker declares, so the two cannot drift. Loaded at boot (``load_definitions``) or with
``rabbitmqctl import_definitions``. Permissions are three regular expressions per user and
vhost (configure, write, read) matched against queue and exchange names alike; see
https://www.rabbitmq.com/docs/access-control.

- planner: publish to exchange ``N.plans``. Nothing else.
- worker: publish to ``N.results``, ``N.review``, ``N.plans.invalid``, ``N.commands``,
  ``N.markers``, ``N.notes`` and ``N.checkpoints``; consume ``N.plans``, the streams
  ``N.results.log``, ``N.checkpoints`` and ``N.control``, and replies (direct reply-to). It
  declares nothing: run it with ``declare_topology = false``.
- reflection: read ``N.results`` through queues of its own, ``N.reflection.<anything>``.
- operator: consume and ack ``N.review``; publish to ``N.control`` (pause, resume, breaker
  resets) and read the streams ``N.control`` and ``N.results.log`` (status, breakers: the
  records it holds are those ``tail`` shows); follow ``N.results`` through
  ``N.tail.<anything>`` queues (``tail``, ``publish`` waiting for records).
- subsystem: consume its own ``N.commands.<subsystem>`` queue and reply. Replies go through the
  default exchange, so this user may write to ``amq.default``: RabbitMQ checks only the
  exchange there, which would let it publish to any queue it can name.
- admin: the vhost's administrator (management UI, ``rabbitmqctl``), tagged ``administrator``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any, Final

from schemas.names import DELIVERY_LIMIT, RETENTION_S, Names
from worker.amqp.topology import layout

ROLES: Final = ("planner", "worker", "reflection", "operator", "subsystem", "admin")
#: Environment variable holding a role's password for ``--password-env``.
PASSWORD_ENV: Final = "OPTIMISER_PASSWORD_{role}"
NOTHING: Final = "^$"


def permissions(names: Names) -> dict[str, tuple[str, str, str]]:
    """(configure, write, read) regular expressions of each role."""

    def either(*patterns: str) -> str:
        return "^(" + "|".join(patterns) + ")$"

    def own(kind: str) -> str:  # the queues a role makes for itself: N.<kind>.<anything>
        return f"{re.escape(names.namespace)}\\.{kind}\\..+"

    lit = re.escape
    tail, reflection, commands = own("tail"), own("reflection"), own("commands")
    return {
        "planner": (NOTHING, either(lit(names.plans_exchange)), NOTHING),
        "worker": (
            NOTHING,
            either(
                lit(names.results_exchange),
                lit(names.review_exchange),
                lit(names.invalid_exchange),
                lit(names.commands_exchange),
                lit(names.markers),
                lit(names.notes),
                lit(names.checkpoints),
            ),
            either(
                lit(names.plans_queue),
                lit(names.results_log),
                lit(names.checkpoints),
                lit(names.control),
                lit("amq.rabbitmq.reply-to"),
            ),
        ),
        "reflection": (
            either(reflection),
            either(reflection),
            either(lit(names.results_exchange), reflection),
        ),
        "operator": (
            either(tail),
            either(lit(names.control), tail),
            either(
                lit(names.review_queue),
                lit(names.control),
                lit(names.results_exchange),
                lit(names.results_log),
                tail,
            ),
        ),
        "subsystem": (
            either(commands),
            either(commands, lit("amq.default")),
            either(lit(names.commands_exchange), commands),
        ),
        "admin": (".*", ".*", ".*"),
    }


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(
    names: Names,
    *,
    vhost: str = "optimiser",
    user_prefix: str = "optimiser-",
    passwords: Mapping[str, str] | None = None,
    delivery_limit: int = DELIVERY_LIMIT,
    retention_s: int = RETENTION_S,
) -> dict[str, Any]:
    """The definitions document. A role without a password gets an empty hash: it cannot log
    in until ``rabbitmqctl change_password`` gives it one."""
    passwords = passwords or {}
    spec = layout(names, delivery_limit=delivery_limit, retention_s=retention_s)
    users = [
        {
            "name": f"{user_prefix}{role}",
            "password_hash": password_hash(passwords[role]) if passwords.get(role) else "",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"] if role == "admin" else [],
            "limits": {},
        }
        for role in ROLES
    ]
    return {
        "vhosts": [{"name": vhost}],
        "users": users,
        "permissions": [
            {
                "user": f"{user_prefix}{role}",
                "vhost": vhost,
                "configure": configure,
                "write": write,
                "read": read,
            }
            for role, (configure, write, read) in permissions(names).items()
        ],
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type.value,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for e in spec.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": q.arguments,
            }
            for q in spec.queues
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": vhost,
                "destination": b.queue,
                "destination_type": "queue",
                "routing_key": b.routing_key,
                "arguments": {},
            }
            for b in spec.bindings
        ],
    }


def passwords_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Each role's password from ``OPTIMISER_PASSWORD_<ROLE>``, where set."""
    found = {}
    for role in ROLES:
        value = environ.get(PASSWORD_ENV.format(role=role.upper()), "")
        if value:
            found[role] = value
    return found
