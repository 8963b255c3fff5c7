"""What people read: times with their zone, replays marked, columns that fit, plain English."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import msgspec

from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction
from worker.cli.logs import Quieter
from worker.ops.format import format_record, plural, record_header
from worker.ops.review import ReviewItem, _list_review, _review_detail

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _record(module: str = "cognition.detector", *, replay: bool = False) -> EnactmentRecord:
    return EnactmentRecord(
        plan_id="p",
        action=ImprovementAction(
            action_id="a-1", module_name=module, action_kind=ActionKind.REDUCE_LOAD
        ),
        status=EnactmentStatus.SUCCESS,
        detail="load-shed signal sent",
        # An offset other than UTC: the line must still say UTC, with its Z.
        attempted_at=datetime(2026, 11, 24, 13, 30, 5, tzinfo=timezone(timedelta(hours=1))),
        replay=replay,
    )


def test_a_record_line_gives_its_time_in_utc_with_its_zone() -> None:
    assert format_record(_record()).startswith("12:30:05Z  SUCCESS")


def test_a_replayed_record_says_so() -> None:
    assert "[replay" not in format_record(_record())
    assert "[replay of the record of an earlier delivery] load-shed" in format_record(
        _record(replay=True)
    )


def test_long_module_names_keep_the_columns_aligned() -> None:
    module = "cognition.long.module.name.beyond.twenty"
    width = len(module)
    header, line = record_header(width), format_record(_record(module), width)
    assert header.index("DETAIL") == line.index("load-shed")


def _item(action_id: str, module: str, minutes_ago: int) -> ReviewItem:
    action = ImprovementAction(
        action_id=action_id, module_name=module, action_kind=ActionKind.FLAG_FOR_REVIEW
    )
    return ReviewItem(
        action_id=action_id,
        action=action,
        plan_id="p",
        flagged_at=NOW - timedelta(minutes=minutes_ago),
        deliveries=0,
    )


def test_review_list_is_oldest_first_and_its_columns_fit() -> None:
    lines: list[str] = []
    items = [
        _item("newer", "m", 1),
        _item("oldest", "a.module.with.a.name.longer.than.its.column", 30),
        _item("middle", "m", 10),
    ]
    _list_review(items, NOW, as_json=False, out=lines.append)
    assert [line.split()[2] for line in lines[1:4]] == ["oldest", "middle", "newer"]
    header, *rows = lines[:4]
    assert all(row.index(item) == header.index("ACTION ID") for row, item in
               zip(rows, ["oldest", "middle", "newer"], strict=True))  # fmt: skip
    json_lines: list[str] = []
    _list_review(items, NOW, as_json=True, out=json_lines.append)
    assert [msgspec.json.decode(j)["action_id"] for j in json_lines] == [
        "oldest", "middle", "newer",
    ]  # fmt: skip


def test_counts_are_plain_english() -> None:
    assert plural(1, "action") == "1 action"
    assert plural(3, "record") == "3 records"


def test_the_worker_logs_utc_times_with_their_zone() -> None:
    env = {
        **os.environ,
        "OPTIMISER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "OPTIMISER_CONNECT_RETRY_S": "0",
        "OPTIMISER_METRICS_PORT": "-1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if " INFO " in line]
    assert lines, done.stderr
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", line) for line in lines
    ), lines


def test_library_chatter_is_thinned_to_one_line_a_minute_without_traceback() -> None:
    now = [0.0]
    quieter = Quieter(every_s=60.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        try:
            raise ConnectionError("refused")
        except ConnectionError:
            return logging.LogRecord(
                name, logging.WARNING, __file__, 1, msg, ("x",), sys.exc_info()
            )

    reconnect = 'Connection attempt to "%s" failed'
    kept = [quieter.filter(record("aio_pika.robust_connection", reconnect)) for _ in range(6)]
    assert kept == [True, False, False, False, False, False]
    assert quieter.filter(record("aiormq.connection", "error when creating transport: %r"))
    assert quieter.filter(record("worker.amqp.worker", "lost the broker at %s"))  # ours: always
    assert quieter.filter(record("worker.amqp.worker", "lost the broker at %s"))
    now[0] = 61.0
    again = record("aio_pika.robust_connection", reconnect)
    assert quieter.filter(again)
    assert again.exc_info is None  # no traceback for an expected disconnect


def test_control_characters_from_the_wire_never_reach_the_terminal() -> None:
    hostile = "\x1b[2J\x1b[Hall clear\nFAILED 0\x9b31m"
    action = ImprovementAction(
        action_id="a-1",
        module_name="m",
        action_kind=ActionKind.FLAG_FOR_REVIEW,
        rationale=hostile,
        parameters={"why": hostile},
    )
    item = ReviewItem(
        action_id="a-1", action=action, plan_id="p\x1b[2J", flagged_at=NOW, deliveries=0
    )
    listed: list[str] = []
    _list_review([item], NOW, as_json=False, out=listed.append)
    shown = _review_detail(item, NOW)
    record = msgspec.structs.replace(_record(), detail=hostile)
    for text in [*listed, shown, format_record(record)]:
        assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in text), text
    assert "\\x1b[2J" in shown
    assert len(format_record(record).splitlines()) == 1  # no forged second line
