"""What makes a folder of tests a room: every test collected in it carries the room's marks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def marked(conftest: str, *marks: str) -> Callable[[list[pytest.Item]], None]:
    """The ``pytest_collection_modifyitems`` hook of a room's ``conftest.py``: each test
    collected under it gets ``marks``, before ``-m`` deselects by marker."""
    here = Path(conftest).resolve().parent

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        for item in items:
            if here in item.path.resolve().parents:
                for mark in marks:
                    item.add_marker(getattr(pytest.mark, mark))

    return pytest_collection_modifyitems
