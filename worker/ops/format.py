"""How the tools show records to a person: one aligned line each, times in UTC with their zone."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

from schemas import EnactmentRecord
from worker.core.text import printable

log = logging.getLogger(__name__)


#: Width of the MODULE column unless the module names at hand need more.
MODULE_WIDTH: Final = 20


def record_header(module_width: int = MODULE_WIDTH) -> str:
    """The header line above ``format_record`` lines of the same width."""
    return f"{'TIME':<10} {'STATUS':<12} {'KIND':<16} {'MODULE':<{module_width}} DETAIL"


def plural(count: int, noun: str) -> str:
    """``1 action``, ``2 actions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_record(record: EnactmentRecord, module_width: int = MODULE_WIDTH) -> str:
    """One aligned line for a record; the time is UTC, with its ``Z``. A replay (a record
    published again for an action enacted before) says so before its detail."""
    action = record.action
    when = record.attempted_at.astimezone(UTC).strftime("%H:%M:%SZ")
    replay = "[replay of the record of an earlier delivery] " if record.replay else ""
    return (
        f"{when:<10} {record.status.value:<12} {action.action_kind.value:<16} "
        f"{action.module_name:<{module_width}} {replay}{printable(record.detail)}"
    )


def utc_time(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")


def seconds_since(since: datetime) -> str:
    return f"{(datetime.now(UTC) - since).total_seconds():.0f}s"
