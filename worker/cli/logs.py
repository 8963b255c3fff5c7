"""Logging for people: the libraries' reconnect chatter, thinned to what a person can read.

While the broker is away aio-pika and aiormq log every attempt, some with a traceback (an
earlier run: 2,526 lines in 7 minutes). The worker says itself, once, that it lost the broker
and that it is back, and which addresses did not answer (for the first failed round, then once a
minute: ``ClusterConnection``); ``Quieter`` lets each library message through at most once per
``every_s`` and without its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

#: The loggers whose lines are thinned.
LIBRARIES: Final = ("aio_pika", "aiormq")


class Quieter(logging.Filter):
    """At most one record per (logger, message template) every ``every_s``, no traceback."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES):
            return True
        now, key = self._clock(), (record.name, record.msg)
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            return False
        self._last[key] = now
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
